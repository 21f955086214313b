"""pyinfra inventory of the two CI workstations (``inventory/examples/ci-two.yaml``)."""

from inventory.loader import hosts_or_exit

hosts = hosts_or_exit(__file__, "examples/ci-two.yaml")
