"""Run script-monitor from a checkout: ``python main.py <command>``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from script_monitor.cli import main

if __name__ == "__main__":
    sys.exit(main())
