"""The fabric: how bytes move between host memory and GPUs (DESIGN.md, "the model" layer).

* :mod:`tuning.fabric.schema` — the ``fabric:`` section of a rig file (sockets, root ports,
  switches, chipset, risers, NVLink bridges, NVMe drives and NICs), validated with YAML paths;
* :mod:`tuning.fabric.params` — the physical figures (PCIe rates, protocol overheads, hop
  latencies), each with its source, from ``tuning/fabric/pcie.yaml``;
* :mod:`tuning.fabric.graph` — the fabric as a tree of links, the lane budget, the path a
  transfer takes;
* :mod:`tuning.fabric.model` — concurrent transfers sharing every link they cross (max-min
  fair, each direction separately), staged copies, latency;
* :mod:`tuning.fabric.links_file` — ``links.yaml``: what ``rigforge links`` measured, typed.
"""
