"""The renderer (DESIGN.md, layer 5): every file a deploy puts, rendered without pyinfra.

* :mod:`tuning.render.unit_text` — the one unit-text writer: refuses newlines and control
  characters (:class:`UnsafeUnitValue`), quotes the rest for systemd;
* :mod:`tuning.render.environment` — the one jinja environment over ``templates/``, whose
  unit templates print only what the writer produced;
* :mod:`tuning.render.files` — the :class:`FileSpec` of every templated file a deploy puts.

The deploys (``deploys/``) and ``rigforge loop`` both use it; nothing here imports pyinfra.
"""

from tuning.render import unit_text
from tuning.render.environment import TEMPLATES, environment, render
from tuning.render.files import FileSpec

# the writer's public names are this package's too, listed once (unit_text.__all__)
from tuning.render.unit_text import *  # noqa: F403

__all__ = ["TEMPLATES", "FileSpec", "environment", "render", *unit_text.__all__]
