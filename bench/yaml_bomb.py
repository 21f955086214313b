"""How long the safe loader takes to refuse a 600-byte alias bomb, printed (target: < 1 s).

Run from the repo root: ``.venv/bin/python bench/yaml_bomb.py``. PyYAML's ``safe_load`` would
build the bomb (shared objects), and every walker after it would visit 9⁹ nodes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuning.core.yamlsafe import YamlRefused, parse_yaml

BOMB = Path(__file__).resolve().parents[1] / "tests/inventory/bad/yaml-alias-bomb.yaml"


def main() -> None:
    text = BOMB.read_text(encoding="utf-8")
    start = time.perf_counter()
    try:
        parse_yaml(text, BOMB.name)
    except YamlRefused as error:
        elapsed_s = time.perf_counter() - start
        print(f"{len(text.encode())} bytes refused in {elapsed_s * 1000:.1f} ms: {error}")
        return
    raise SystemExit("the bomb was accepted")


if __name__ == "__main__":
    main()
