"""ASPM operations under the name the ``pcie`` deploy imports; they live in :mod:`.pcie`
(next to the :mod:`deploys.facts.pcie` facts they diff)."""

from deploys.operations.pcie import aspm_policy, link_aspm_off

__all__ = ["aspm_policy", "link_aspm_off"]
