"""script-monitor: run, schedule and monitor scripts declared in YAML."""

__version__ = "0.1.0"
