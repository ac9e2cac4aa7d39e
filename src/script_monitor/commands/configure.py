"""validate, show-config, get-setting, init."""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path

from ..config import (
    Config,
    Script,
    Settings,
    config_dir_from,
    get_setting,
    load_config,
    to_builtins,
)
from ..errors import EXIT_OK, UsageError
from . import load


def cmd_validate(args: argparse.Namespace) -> int:
    config = load_config(config_dir_from(args.config_dir))  # ConfigError -> exit 2
    if config.settings.notifications.channels:  # Apprise parses each URL (docs/NOTIFICATIONS.md)
        from ..errors import ConfigError
        from ..notify.channels import channel_problems

        found = channel_problems(config)
        errors = [p for p in found if p.level == "error"]
        config.warnings += [p for p in found if p.level == "warning"]
        if errors:
            raise ConfigError(errors, config.warnings)
    from ..redact import config_masker, redact
    from ..tokens import token_problems

    config.warnings += token_problems(config)
    masker = config_masker(config)
    for problem in config.warnings:
        print(redact(str(problem), masker))
    n_w = len(config.warnings)
    print(
        f"Configuration OK: {len(config.scripts)} scripts, {len(config.groups)} groups"
        + (f", {len(config.checks)} checks" if config.checks else "")
        + (f", {n_w} warning{'s' * (n_w != 1)}" if n_w else "")
        + f" ({config.root})"
    )
    return EXIT_OK


def effective(config: Config) -> dict:
    """The configuration as plain data, secret values masked."""
    data = {
        "config_dir": str(config.root),
        "settings": to_builtins(config.settings),
        "scripts": [_masked(config, s) for s in config.scripts.values()],
        "groups": [to_builtins(g) for g in config.groups.values()],
    }
    if config.checks:  # their keys are masked with the other secrets
        data["checks"] = [to_builtins(c) for c in config.checks.values()]
    return data


def _masked(config: Config, script: Script) -> dict:
    data = to_builtins(script)
    secret = {*config.settings.secret_env, *script.secret_env}
    if "env" in data:
        data["env"] = {k: ("***" if k in secret else v) for k, v in data["env"].items()}
    return data


def cmd_show_config(args: argparse.Namespace) -> int:
    config = load(args)
    data = effective(config)
    data["settings"] = _full(config.settings)
    from ..redact import config_masker, redact

    data = redact(data, config_masker(config))  # the same secrets the logs mask, and more
    if args.json:
        from ..serialize import config_json

        print(json.dumps(config_json(data), indent=2))
    else:
        import yaml

        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return EXIT_OK


def _full(settings: Settings) -> dict:
    """Every setting, defaults included (to_builtins omits defaults)."""
    import msgspec

    if not isinstance(settings, msgspec.Struct):
        return to_builtins(settings)
    return {name: _full(getattr(settings, name)) for name in settings.__struct_fields__}


def cmd_get_setting(args: argparse.Namespace) -> int:
    config = load(args, warn=False)
    try:
        value = get_setting(config.settings, args.key)
    except KeyError:
        raise UsageError(f"unknown setting '{args.key}'") from None
    if hasattr(value, "__struct_fields__") or isinstance(value, list):
        value = _full(value)
    from ..redact import config_masker, redact

    # wrapped under its own key, so that a lone web.token is masked like one in a mapping
    value = redact({args.key.rpartition(".")[2]: value}, config_masker(config))
    value = next(iter(value.values()))
    if isinstance(value, bool):
        print("true" if value else "false")
    elif isinstance(value, float) and value.is_integer():
        print(int(value))
    elif isinstance(value, dict | list):
        print(json.dumps(value))
    else:
        print(value)
    return EXIT_OK


TEMPLATE_FILES = ("config.yaml", "scripts.yaml", "groups.yaml", "checks.yaml")
SCHEMA_DIR = ".schema"  # each template's first line points its editor here


def _write_schemas(directory: Path) -> list[str]:
    """The JSON Schemas the templates name, so editors complete and check them offline."""
    from .schema import FILE_NAMES, render

    directory.mkdir(exist_ok=True)
    for kind, name in FILE_NAMES.items():
        (directory / name).write_text(render(kind))
    return [f"{directory.name}/{name}" for name in FILE_NAMES.values()]


def cmd_init(args: argparse.Namespace) -> int:
    target = (
        Path(args.directory).expanduser() if args.directory else config_dir_from(args.config_dir)
    )
    existing = [name for name in TEMPLATE_FILES if (target / name).exists()]
    existing += [d for d in ("scripts", "groups", "checks") if (target / d).exists()]
    if existing:
        raise UsageError(
            f"{target} already has {', '.join(existing)}; refusing to overwrite "
            "(init writes only into an empty or new directory)"
        )
    target.mkdir(parents=True, exist_ok=True)
    templates = resources.files("script_monitor") / "templates"
    for name in TEMPLATE_FILES:
        (target / name).write_text((templates / name).read_text())
    written = [*TEMPLATE_FILES, *_write_schemas(target / SCHEMA_DIR)]
    print(f"Wrote an example configuration to {target}:")
    for name in written:
        print(f"  {name}")
    print(f"Try: script-monitor --config-dir {target} run-group health_checks")
    return EXIT_OK
