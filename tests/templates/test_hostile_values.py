"""Every unit and script the renderer writes, fed each hostile value in each string field.

For every field that reaches a file (:data:`FIELDS`) and every value of
:data:`tests.hostile.HOSTILE`, the renderer must either **refuse** it with
:class:`~tuning.render.UnsafeUnitValue`, or write it so that

* a directive parse of the text (``tests.hostile.systemd_directives``, after systemd.syntax(7))
  finds exactly the directives the file has with a benign value — no extra, none lost;
* systemd reads back exactly the value: the ``ExecStart=`` word, the ``Environment=``
  assignment or the setting, unquoted the way systemd.service(5) says
  (``tests.hostile.systemd_words``), equals what was put in;
* ``systemd-analyze verify --man=no`` (systemd 252) reports nothing but the executables it
  cannot find. Those are expected: the units name binaries that exist on a deployed host
  (the tuner's venv, the engines, the rendered scripts), not on the machine running the
  tests, and a hostile path can never exist anywhere; every other line fails the test.

The unit files go into a temporary folder, one file per accepted value, and are verified in
one ``systemd-analyze`` call per field.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from inventory.schema import HostConfig
from tests.hostile import HOSTILE, Directive, setting_value, systemd_directives, systemd_words
from tests.placements import GPU_A, GPU_B, placement
from tuning.render import UnsafeUnitValue
from tuning.render import files as specs
from tuning.serving import render_serving_units, render_unit

CONFIG = HostConfig.model_validate({"ssh": {"host": "127.0.0.1"}})
PLACEMENT = placement(cpu_list=(16, 17, 18, 19))
#: What systemd-analyze may say about a unit rendered here (see the module docstring).
MISSING_BINARY = re.compile(r"^\S+: Command .* is not executable: No such file or directory$")


@dataclass(frozen=True)
class Field:
    """One place a value reaches a file: how to render it there and where to read it back.

    ``where``: ``exec`` (a word of ``ExecStart=``), ``env:NAME`` (the value of ``NAME=`` in
    ``Environment=``), a setting's key, ``comment`` or ``script`` (nothing to read back);
    ``expect`` maps the value to what systemd must read.
    """

    name: str
    render: Callable[[Any], str]
    benign: Any
    where: str
    expect: Callable[[Any], str] = str


def _with(section: str, **values: object) -> HostConfig:
    """``CONFIG`` with one section's fields replaced unvalidated (the renderer is the last door)."""
    return CONFIG.model_copy(update={section: getattr(CONFIG, section).model_copy(update=values)})


def _serving(engine: str, **kwargs: Callable[[Any], object] | object) -> Callable[[Any], str]:
    """``engine``'s unit; ``p_<field>`` sets a placement field, other keywords render_unit's."""

    def render(value: Any) -> str:
        args: dict[str, Any] = {}
        overrides: dict[str, Any] = {"engine": engine}
        for key, spec in kwargs.items():
            resolved = spec(value) if callable(spec) else spec
            if key.startswith("p_"):
                overrides[key[2:]] = resolved
            else:
                args[key] = resolved
        return render_unit(replace(PLACEMENT, **overrides), **args)

    return render


def _as_is(value: Any) -> Any:
    return value


def _gpu_unit(**kwargs: Any) -> Callable[[Any], str]:
    def render(value: Any) -> str:
        config = _with("tuner", venv=value) if kwargs.get("venv") else CONFIG
        caps = [(value, 250.0)] if kwargs.get("key") else [(GPU_A, 250.0)]
        extra = {k: value for k in ("profile", "script") if kwargs.get(k)}
        return specs.settings_unit(
            config, caps, use_tuner=kwargs.get("use_tuner", True), **extra
        ).render()

    return render


FIELDS: list[Field] = [
    Field(
        "gpu-settings: tuner.venv",
        _gpu_unit(venv=True),
        "/opt/rigforge/venv",
        "exec",
        lambda v: f"{v}/bin/rigforge",
    ),
    Field("gpu-settings: profile path", _gpu_unit(profile=True), "/etc/rigforge/p.yaml", "exec"),
    Field(
        "gpu-settings: cap script path",
        _gpu_unit(script=True, use_tuner=False),
        "/usr/local/libexec/rigforge-gpu-settings",
        "exec",
    ),
    Field(
        "gpu-settings: GPU key in RIGFORGE_CAPS_W",
        _gpu_unit(key=True),
        GPU_A,
        "env:RIGFORGE_CAPS_W",
        lambda v: f"{v}=250",
    ),
    Field(
        "irq-affinity: kernel.root",
        lambda v: specs.irq_pinning_files(_with("kernel", root=v))[1].render(),
        "/",
        "env:RIGFORGE_KERNEL_ROOT",
    ),
    Field(
        "irq-affinity: script path",
        lambda v: specs.irq_pinning_files(CONFIG, script=v)[1].render(),
        "/usr/local/libexec/rigforge-irq-affinity",
        "exec",
    ),
    Field(
        "persistenced drop-in: daemon",
        lambda v: specs.persistenced_dropin("nvpd", daemon=v).render(),
        "/usr/bin/nvidia-persistenced",
        "exec",
    ),
    Field(
        "persistenced drop-in: user",
        lambda v: specs.persistenced_dropin(v).render(),
        "nvpd",
        "exec",
    ),
    Field(
        "profile.d: CUDA version",
        lambda v: specs.cuda_profile(v).render(),
        "12.8",
        "script",
    ),
    Field("cap script: retries", lambda v: specs.cap_script(retries=v).render(), 3, "script"),
    Field(
        "cap script: retry delay", lambda v: specs.cap_script(retry_delay_s=v).render(), 2, "script"
    ),
]
for engine in ("vllm", "sglang", "llama.cpp"):
    FIELDS += [
        Field(f"{engine}: model", _serving(engine, p_model=_as_is), "qwq-32b", "exec"),
        Field(f"{engine}: weights", _serving(engine, p_weights=_as_is), "Qwen/QwQ-32B", "exec"),
        Field(
            f"{engine}: extra arg",
            _serving(engine, p_extra_args=lambda v: (v,)),
            "--enable-prefix-caching",
            "exec",
        ),
        Field(
            f"{engine}: GPU id",
            _serving(engine, p_gpus=lambda v: (v, GPU_B)),
            GPU_A,
            "env:CUDA_VISIBLE_DEVICES",
            lambda v: f"{v},{GPU_B}",
        ),
        Field(f"{engine}: worst link", _serving(engine, p_worst_link=_as_is), "SYS", "comment"),
        Field(f"{engine}: serving.bind", _serving(engine, bind=_as_is), "127.0.0.1", "exec"),
        Field(f"{engine}: service user", _serving(engine, service_user=_as_is), "rigforge", "User"),
        Field(
            f"{engine}: engine binary",
            _serving(engine, engine_bins=lambda v, e=engine: {e: v}),
            "/usr/local/bin/engine",
            "exec",
        ),
        Field(
            f"{engine}: hf token file",
            _serving(engine, hf_token_file=_as_is),
            "/etc/rigforge/secrets/hf-token",
            "LoadCredential",
            lambda v: f"hf-token:{v}",
        ),
    ]
for engine in ("vllm", "llama.cpp"):  # the engines that read an API key from the environment
    FIELDS.append(
        Field(
            f"{engine}: API key environment file",
            _serving(engine, bind="0.0.0.0", api_key_file=_as_is),
            "/etc/rigforge/secrets/api-key.env",
            "EnvironmentFile",
        )
    )


def _keys(directives: list[Directive]) -> list[tuple[str, str]]:
    return [(d.section, d.key) for d in directives]


def _read_back(text: str, where: str) -> list[str]:
    """What systemd reads from the directives ``where`` names (see :class:`Field`)."""
    directives = systemd_directives(text)
    if where == "exec":
        return [
            word
            for d in directives
            if d.key.startswith("ExecStart") and d.value
            for word in systemd_words(d.value)
        ]
    if where.startswith("env:"):
        name = where.removeprefix("env:") + "="
        return [
            word.removeprefix(name)
            for d in directives
            if d.key == "Environment"
            for word in systemd_words(d.value, expand_dollar=False)
            if word.startswith(name)
        ]
    return [setting_value(d.value) for d in directives if d.key == where]


def _verify(units: dict[str, str], folder: Path) -> list[str]:
    """``systemd-analyze verify`` of every unit; the lines that are not a missing binary."""
    paths = []
    for i, text in enumerate(units.values()):
        path = folder / f"hostile-{i}.service"
        if "[Unit]" not in text:  # a drop-in: verify it as a service of its own
            text = "[Unit]\nDescription=drop-in under test\n" + text
        path.write_text(text, encoding="utf-8")
        paths.append(str(path))
    out = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *paths],
        capture_output=True,
        text=True,
        check=False,
        cwd=folder,
    )
    lines = (out.stdout + out.stderr).splitlines()
    return [line for line in lines if line.strip() and not MISSING_BINARY.match(line)]


def test_the_checker_sees_an_injected_directive() -> None:
    """The parse this test relies on finds the issue-10 injection in an unguarded unit."""
    clean = '[Service]\nEnvironment="RIGFORGE_KERNEL_ROOT=/"\nExecStart=/x\n'
    injected = clean.replace('=/"', "=/\nExecStartPre=+/bin/sh -c 'id'\n#\"")
    assert _keys(systemd_directives(injected)) != _keys(systemd_directives(clean))
    assert systemd_words('"/opt/my venv$$HOME%%h" a\\"b') == ["/opt/my venv$HOME%h", 'a"b']
    with pytest.raises(ValueError, match="specifier"):
        systemd_words("/x/%n")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize("field", FIELDS, ids=[f.name for f in FIELDS])
def test_hostile_value_is_refused_or_read_back_exactly(field: Field, tmp_path: Path) -> None:
    baseline = field.render(field.benign)
    expected_keys = _keys(systemd_directives(baseline))
    if field.where not in ("script", "comment"):
        assert field.expect(field.benign) in _read_back(baseline, field.where)
    accepted: dict[str, str] = {"benign": baseline}
    refused = []
    for label, value in HOSTILE.items():
        try:
            text = field.render(value)
        except UnsafeUnitValue:
            refused.append(label)
            continue
        assert _keys(systemd_directives(text)) == expected_keys, f"{label}: directives changed"
        if field.where not in ("script", "comment"):
            assert field.expect(value) in _read_back(text, field.where), f"{label}: not verbatim"
        accepted[label] = text
    # a newline or a control character can never be written into a unit safely
    assert {"newline_execstartpre", "cr_execstartpre", "nul", "escape"} <= set(refused)
    if field.where != "script":
        assert _verify(accepted, tmp_path) == []


@pytest.mark.parametrize(
    ("section", "key", "value", "render"),
    [
        ("kernel", "root", HOSTILE["issue10_kernel_root"], "irq"),
        ("tuner", "venv", HOSTILE["issue10_tuner_venv"], "gpu"),
        ("serving", "bind", HOSTILE["issue10_serving_bind"], "serving"),
    ],
)
def test_issue10_injections_through_the_inventory_are_refused(
    section: str, key: str, value: str, render: str, tmp_path: Path
) -> None:
    """The three root injections of issue 10, entered in an inventory host entry as a user
    would: refused by validation or by the renderer, never written into a unit."""
    entry: dict[str, object] = {"ssh": {"host": "127.0.0.1"}, section: {key: value}}
    if section == "serving":
        entry["serving"] = {
            key: value,
            "models": [{"model": "m", "engine": "vllm", "gpus": [GPU_A], "port": 8001}],
        }
    try:
        config = HostConfig.model_validate(entry)
    except ValidationError:
        return  # refused at validation, before anything is rendered
    renderers: dict[str, Callable[[], object]] = {
        "irq": lambda: specs.irq_pinning_files(config)[1].render(),
        "gpu": lambda: specs.settings_unit(config, [(GPU_A, 250.0)], use_tuner=True).render(),
        "serving": lambda: render_serving_units(config.serving, host_config=config),
    }
    with pytest.raises(UnsafeUnitValue):
        renderers[render]()
