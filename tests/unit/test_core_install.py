"""``rigforge loop`` on a core install (no ``[deploy]``, no ``[plots]`` extra) renders what a
full install renders.

A core install lacks pyinfra and matplotlib; the test removes both from a child interpreter
(``sys.modules[name] = None`` makes every ``import name`` raise ImportError, exactly as on an
install without them) and runs the real command there. This process (which has both) then
renders the same profile and plan with the deploys' own files: the trees must be identical.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BLOCKED = ("pyinfra", "matplotlib")
ARGS = ["loop", "--sustained-s", "10", "--heat-soak-s", "10", "--seed", "3"]


def _loop(out: Path, *, blocked: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    """``rigforge loop`` in a child interpreter where ``blocked`` modules cannot be imported."""
    code = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None\n"
        "from tuning.cli import main\n"
        f"sys.argv = ['rigforge', *{[*ARGS, '--out', str(out)]!r}]\n"
        "main()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300
    )


def _tree(root: Path) -> dict[str, str]:
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            files[str(path.relative_to(root))] = path.read_text(encoding="utf-8")
    return files


def test_loop_renders_the_same_files_without_pyinfra_and_matplotlib(tmp_path: Path) -> None:
    core = _loop(tmp_path / "core", blocked=BLOCKED)
    assert core.returncode == 0, core.stdout[-2000:] + core.stderr[-2000:]
    assert "no plots" in core.stdout + core.stderr
    rendered_core = _tree(tmp_path / "core" / "rendered")
    assert "etc/systemd/system/rigforge-gpu-settings.service" in rendered_core

    # with pyinfra present: the deploy modules' own FileSpecs for the same profile and plan
    from deploys import affinity, gpu_settings, pcie
    from inventory.schema import HostConfig
    from tuning.placement import load_plan
    from tuning.serving import render_serving_units

    profile = tmp_path / "core" / "profile.yaml"
    plan = load_plan(tmp_path / "core" / "plan.yaml")
    # The host a deploy would serve this plan on (serving.plan: the IRQ script reads its
    # irq_cpus from it).
    config = HostConfig.model_validate(
        {
            "ssh": {"host": "127.0.0.1"},
            "power": {"profile": str(profile)},
            "serving": {"plan": str(tmp_path / "core" / "plan.yaml")},
        }
    )
    specs = [
        gpu_settings.settings_unit(config, gpu_settings.caps_w(config), use_tuner=True),
        pcie.grub_fragment(),
        *affinity.irq_pinning_files(config),
        *affinity.irqbalance_files(),
    ]
    by_deploys = {spec.dest.lstrip("/"): spec.render() for spec in specs}
    by_deploys.update(
        {
            dest.lstrip("/"): text
            for dest, text in render_serving_units(plan, host_config=config).items()
        }
    )
    assert {k: v for k, v in rendered_core.items() if k in by_deploys} == by_deploys
    assert set(rendered_core) - set(by_deploys) == {
        "etc/rigforge/profile.yaml",
        "etc/rigforge/plan.yaml",
    }
