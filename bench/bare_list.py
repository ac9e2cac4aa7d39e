"""The W6 baseline: a bare program that only parses the same configuration.

Reads config.yaml, scripts.yaml and groups.yaml with PyYAML's CSafeLoader and
prints one line per script (name and description).  No validation, no
history database: `script-monitor --help` and `script-monitor list` are
compared with the cost of starting Python and reading the YAML.

    python bench/bare_list.py CONFIG_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def _read(path: Path) -> dict:
    if not path.exists():
        return {}
    with path.open("rb") as f:
        return yaml.load(f, Loader=yaml.CSafeLoader) or {}


def main(argv: list[str]) -> int:
    """Print every script of config dir ``argv[0]`` with its description."""
    root = Path(argv[0]).resolve()
    _read(root / "config.yaml")
    _read(root / "groups.yaml")
    out = sys.stdout
    for script in _read(root / "scripts.yaml").get("scripts", []):
        out.write(f"{script['name']}  {script.get('description', '')}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
