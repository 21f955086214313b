"""``rigforge exporter``: the box's power, heat, links, caps, Xid events and serving health
for Prometheus (:mod:`.metrics` defines every series, :mod:`.collector` reads them,
:mod:`.xid` counts kernel-log events, :mod:`.sim_driver` runs a simulated rig in real time)."""
