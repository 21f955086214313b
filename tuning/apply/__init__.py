"""Safety: snapshot, journal and restore GPU settings; apply a profile's caps.

One concern a module (import from the module, not from this package):

- :mod:`~tuning.apply.state` — the state dir (``$RIGFORGE_STATE_DIR``, else
  ``/var/lib/rigforge/state`` for root, ``~/.local/state/rigforge`` for others) and the
  atomic, fsync'd JSON write every state file uses.
- :mod:`~tuning.apply.actuator` — :class:`~tuning.apply.actuator.Actuator`, the one place a cap
  changes (set, read back), and ``open_tuning_rig``.
- :mod:`~tuning.apply.sim_state` — a simulated rig's caps persisted between processes, so a
  ``kill -9`` really leaves the "hardware" at the probe's cap.
- :mod:`~tuning.apply.runlock` — one rigforge run per rig (``flock``).
- :mod:`~tuning.apply.journal` — the originals on disk before the first change; stale
  journals restored on the next start; probes recorded so a sweep resumes.
- :mod:`~tuning.apply.signals` — SIGTERM, SIGHUP, SIGQUIT and SIGINT raise, so ``finally``
  restores.
- :mod:`~tuning.apply.session` — :class:`~tuning.apply.session.SafetySession`: lock, journal,
  restore however the run ends.
- :mod:`~tuning.apply.retry` — retrying a cap change that failed transiently.
- :mod:`~tuning.apply.caps` — ``apply_caps``: a profile's caps, clamped, inside the budget,
  lowered before raised, all or nothing.

Every change the tuner makes goes through an actuator. Before the first change a safety
session takes the rig's lock and writes the journal — the original power limit and
persistence mode of every GPU, by UUID — as JSON written to a temporary file, fsync'd and
renamed over the old one (a reader sees the old or the new journal, never half of one). The
session restores the originals when the run ends — success, exception, Ctrl-C (SIGINT),
SIGTERM, SIGHUP (terminal or SSH session closed) or SIGQUIT (handlers raise, so ``finally``
runs) — and deletes the journal only once every GPU is back. After ``kill -9`` or a power loss
the journal stays behind; the next ``rigforge sweep|apply|restore`` finds it (its process is
gone) and restores it first.
"""
