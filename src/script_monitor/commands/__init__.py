"""One module per group of verbs; each ``cmd_*`` function takes parsed args, returns an int."""

from __future__ import annotations

import argparse
import sys

from .. import startup
from ..config import Config, config_dir_from, load_config
from ..store import Store


def load(args: argparse.Namespace, warn: bool = True) -> Config:
    """Load and validate the configuration; print its warnings to stderr."""
    config = load_config(config_dir_from(args.config_dir))
    startup.resume_collector()
    if warn:
        for problem in config.warnings:
            print(problem, file=sys.stderr)
    return config


def open_store(config: Config) -> Store:
    store = Store(config.state_dir, config.store_url, config.settings.store.retry_for)
    if config.settings.notifications.channels:  # a lost run notifies (docs/NOTIFICATIONS.md)
        from ..notify import watch_store

        watch_store(config, store)
    return store


def colors(args: argparse.Namespace, config: Config) -> bool:
    return config.settings.display.use_colors and not args.no_color
