"""pyinfra inventory of the reference workstation (``inventory/examples/reference.yaml``)."""

from inventory.loader import hosts_or_exit

hosts = hosts_or_exit(__file__, "examples/reference.yaml")
