"""Writing tuning profiles: a sweep's result as a :class:`Profile` and the YAML file.

The profile's schema and its one typed loader live in :mod:`tuning.core.profile` (every
layer reads profiles); this module only writes them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from tuning.core.profile import (
    CurvePoint,
    Profile,
    ProfileGpu,
    ProfileRig,
    Validation,
)

__all__ = ["dump_profile", "profile_from_result"]


def profile_from_result(result: Any) -> Profile:
    """Build a :class:`Profile` from a :class:`tuning.sweep.SweepResult`."""
    final = result.final_soak
    gpus = [
        ProfileGpu(
            uuid=g.uuid,
            name=g.name,
            pci_bus_id=g.pci_bus_id,
            cap_w=g.cap_w,
            stock_cap_w=g.stock_cap_w,
            min_w=g.min_w,
            max_w=g.max_w,
            natural_draw_w=round(g.natural_draw_w, 1),
            throughput_rel=round(g.throughput_rel, 4),
            tokens_per_joule=round(g.tokens_per_joule, 5),
            peak_temp_c=g.peak_temp_c,
            probes=g.probes,
            flagged=g.flagged,
            curve=[
                CurvePoint(
                    cap_w=p.cap_w,
                    throughput_tps=round(p.throughput_tps, 3),
                    power_w=round(p.power_w, 1),
                    tokens_per_joule=round(p.tokens_per_joule, 5),
                    temp_c=None if p.temp_c != p.temp_c else round(p.temp_c, 1),
                )
                for p in g.curve
            ],
        )
        for g in result.gpus
    ]
    return Profile(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        rig=ProfileRig(name=result.rig_name, spec=result.rig_spec, fingerprint=result.fingerprint),
        workload=result.config.workload,
        policy=str(result.config.policy),
        floor=result.config.floor,
        floor_relaxed=result.floor_relaxed,
        seed=result.config.seed,
        gpus=gpus,
        validation=Validation(
            passed=result.validation_passed,
            sim_seconds=round(final.sim_seconds if final else 0.0, 1),
            throttle_events=len(final.throttle_events) if final else 0,
            peak_temp_c=dict(final.peak_temp_c) if final else {},
            max_psu_load_ratio=round(result.max_psu_load_ratio, 4),
        ),
    )


def dump_profile(profile: Profile, path: Path) -> None:
    """Write the profile as YAML (keys in schema order)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        yaml.safe_dump(profile.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    )
