"""One module per group of verbs; each ``cmd_*`` function takes parsed args, returns an int."""

from __future__ import annotations

import argparse
import sys

from ..config import Config, config_dir_from, load_config
from ..store import Store


def load(args: argparse.Namespace, warn: bool = True) -> Config:
    """Load and validate the configuration; print its warnings to stderr."""
    config = load_config(config_dir_from(args.config_dir))
    _collect_from_now_on()
    if warn:
        for problem in config.warnings:
            print(problem, file=sys.stderr)
    return config


def _collect_from_now_on() -> None:
    """Turn the cycle collector back on (``cli.main`` turns it off for start-up).

    Imports and the YAML parse allocate many objects and no garbage cycles; collecting
    during them costs milliseconds at every start.  What exists now is kept out of
    later collections (gc.freeze), so the scheduler's long life pays nothing for it.
    """
    import gc

    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def open_store(config: Config) -> Store:
    store = Store(config.state_dir, config.store_url, config.settings.store.retry_for)
    if config.settings.notifications.channels:  # a lost run notifies (docs/NOTIFICATIONS.md)
        from ..notify import watch_store

        watch_store(config, store)
    return store


def colors(args: argparse.Namespace, config: Config) -> bool:
    return config.settings.display.use_colors and not args.no_color
