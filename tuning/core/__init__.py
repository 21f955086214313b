"""Core types: zero-dependency values every layer shares (DESIGN.md, layer 1).

GPU identity, rig snapshot, PSU, circuit, PCIe link, bus-id normalisation, fingerprint and the
one budget model live here. Nothing in this package imports from ``inventory``, the tuner, the
renderer or ``deploys``; everything else may import it.
"""
