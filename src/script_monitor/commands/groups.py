"""list-groups."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from ..errors import EXIT_OK
from ..render import duration_text
from ..serialize import groups_json
from . import load, open_store

if TYPE_CHECKING:
    from ..config import Group


def group_heading(group: Group) -> str:
    mode = group.execution + (", stop_on_error" if group.stop_on_error else "")
    return f"Group: {group.name} [execution: {mode}]"


def cmd_list_groups(args: argparse.Namespace) -> int:
    config = load(args)
    store = open_store(config)
    store.runs.reap_lost()
    last = store.reads.last_group_runs()
    fmt = config.settings.display.date_format
    if args.json:
        rows = groups_json(config, last)
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for g in config.groups.values():
        print(group_heading(g))
        if g.description:
            print(f"  {g.description}")
        print(f"  Scripts: {', '.join(g.scripts) if g.scripts else '(none)'}")
        if g.schedule:
            tz = g.timezone or config.settings.scheduling.timezone
            print(f"  Schedule: {g.schedule} ({tz})")
        run = last.get(g.name)
        if run:
            from datetime import datetime

            when = datetime.fromtimestamp(run.started).strftime(fmt)
            took = duration_text(run.ended - run.started) if run.ended else "-"
            print(f"  Last run: {when}, {run.status}, {took}")
        else:
            print("  Last run: never")
    return EXIT_OK
