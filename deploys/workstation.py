"""The one entry: ``pyinfra inventory/<name>.py deploys/workstation.py`` (``--dry``: the plan).

Runs every concern in order; each is skipped cleanly (a no-op note) when the inventory turns it
off. Order: base, driver (pin before packages), CUDA toolkit, container toolkit, PCIe, IRQ
affinity, the CPU's power and latency, the tuner (so the boot unit can use it), GPU settings,
serving, monitoring (the exporter reads the profile and the plan the steps before put there).
"""

from __future__ import annotations

from deploys.affinity import affinity
from deploys.base import base
from deploys.container_toolkit import container_toolkit
from deploys.cpu import cpu
from deploys.cuda import cuda
from deploys.gpu_settings import gpu_settings
from deploys.monitoring import monitoring
from deploys.nvidia_driver import nvidia_driver
from deploys.pcie import pcie
from deploys.serving import serving
from deploys.tuner import tuner

base()
nvidia_driver()
cuda()
container_toolkit()
pcie()
affinity()
cpu()
tuner()
gpu_settings()
serving()
monitoring()
