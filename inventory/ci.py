"""pyinfra inventory of the CI target (``inventory/examples/ci.yaml``), validated first."""

from inventory.loader import hosts_or_exit

hosts = hosts_or_exit(__file__, "examples/ci.yaml")
