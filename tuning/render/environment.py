"""The one jinja environment over ``templates/`` (paths mirror where each file lands).

Every template the deploys put and ``rigforge loop`` renders goes through :func:`render`.
What a ``{{ … }}`` may print is enforced here, not left to each template (``finalize``):

* in every template: no string with a control character (:class:`UnsafeUnitValue`), no
  boolean, no ``inf``/``nan``;
* in a systemd unit (``etc/systemd/…``) or a root script (``usr/local/libexec/…``): only
  :class:`~tuning.render.unit_text.UnitText` (the writer's filters: ``sd``, ``sd_exec``,
  ``sd_env``, ``sd_path``, ``sd_text``, ``sd_verbatim``, ``shell_quote``) and numbers — a raw
  string is refused, so a template cannot interpolate a value unquoted.

Missing variables are errors (``StrictUndefined``), not empty strings.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from tuning.render.unit_text import (
    UnitText,
    UnsafeUnitValue,
    refuse_unsafe,
    shell_word,
    unit_env,
    unit_exec,
    unit_path,
    unit_setting,
    unit_verbatim,
    unit_word,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Templates by the path they land on (``etc/systemd/system/x.service.j2`` → ``/etc/…/x.service``).
TEMPLATES = REPO_ROOT / "templates"
#: Templates under these prefixes are systemd units, drop-ins and root scripts (strict rule).
STRICT_PREFIXES = ("etc/systemd/", "usr/local/libexec/")


@jinja2.pass_context
def _finalize(context: jinja2.runtime.Context, value: Any) -> Any:
    """Refuse what no template may print (see the module docstring)."""
    if isinstance(value, UnitText):
        return value
    where = f"template {context.name}"
    if isinstance(value, bool):
        raise UnsafeUnitValue(f"{where}: a boolean reached the output; render it explicitly")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnsafeUnitValue(f"{where}: {value!r} is not a finite number")
        return value
    if (context.name or "").startswith(STRICT_PREFIXES):
        raise UnsafeUnitValue(
            f"{where}: {str(value)!r} reached a unit or script unquoted; pass it through the "
            "unit-text writer (| sd, sd_exec, sd_env, sd_path, sd_text, sd_verbatim, shell_quote)"
        )
    return refuse_unsafe(value, where)


@cache
def environment() -> jinja2.Environment:
    """The shared environment (built once; filters are the unit-text writer's functions)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
        finalize=_finalize,
    )
    env.filters["sd"] = unit_word
    env.filters["systemd_quote"] = unit_word
    env.filters["sd_exec"] = unit_exec
    env.filters["sd_path"] = unit_path
    env.filters["sd_env"] = lambda value, name: unit_env(name, value)
    env.filters["sd_text"] = unit_setting
    env.filters["sd_verbatim"] = unit_verbatim
    env.filters["shell_quote"] = shell_word
    env.filters["caps_assignments"] = caps_assignments
    return env


def caps_assignments(caps_w: Iterable[tuple[str, float]]) -> str:
    """``[("GPU-a", 280.0), ("GPU-b", 250.5)]`` → ``"GPU-a=280 GPU-b=250.5"`` (W, ``%g``).

    The boot script and ``rigforge apply`` read this back from ``RIGFORGE_CAPS_W``; a key with a
    space or ``=`` would split wrongly, so it is refused.
    """
    words = []
    for key, cap_w in caps_w:
        text = refuse_unsafe(key, "GPU key")
        if not text or any(c.isspace() or c == "=" for c in text):
            raise UnsafeUnitValue(f"GPU key {text!r} for RIGFORGE_CAPS_W has a space or '='")
        refuse_unsafe(cap_w, f"cap of {text}")  # a boolean, inf or nan is no cap
        words.append(f"{text}={float(cap_w):g}")
    return " ".join(words)


def render(template: str, **context: Any) -> str:
    """Render ``templates/<template>`` (a path mirroring where it lands, ``.j2`` suffix)."""
    return environment().get_template(template).render(**context)
