"""schema: the JSON Schema (draft 2020-12) of a configuration file, for editors.

Generated from the same msgspec structures ``validate`` applies, so an editor that reads
it (through a ``# yaml-language-server: $schema=...`` line) completes and checks keys as
script-monitor will.  ``validate`` still has the last word: it also checks what no
schema can say (members that exist, dependency cycles, cron expressions, time zones).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import EXIT_OK

KINDS = ("scripts", "groups", "config", "checks")
DIALECT = "https://json-schema.org/draft/2020-12/schema"
FILE_NAMES = {kind: f"{kind}.schema.json" for kind in KINDS}
_TITLES = {
    "scripts": "script-monitor scripts file (scripts.yaml, scripts/*.yaml)",
    "groups": "script-monitor groups file (groups.yaml, groups/*.yaml)",
    "config": "script-monitor global settings (config.yaml)",
    "checks": "script-monitor passive checks (checks.yaml, checks/*.yaml)",
}


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of one kind of configuration file (one of ``KINDS``)."""
    import msgspec

    from ..config import Check, Group, Script, Settings

    typ = {"scripts": Script, "groups": Group, "config": Settings, "checks": Check}[kind]
    (ref,), defs = msgspec.json.schema_components([typ], ref_template="#/$defs/{name}")
    if kind == "config":
        body: dict[str, Any] = dict(ref)
    else:
        items = {"type": "array", "items": ref}
        # An empty groups (checks) file, or a bare `groups:`, means none; scripts must exist.
        optional = kind != "scripts"
        listed = {"anyOf": [items, {"type": "null"}]} if optional else items
        body = {
            "type": "object",
            "properties": {kind: listed},
            "required": [] if optional else [kind],
            "additionalProperties": False,
        }
    return {"$schema": DIALECT, "title": _TITLES[kind], **body, "$defs": defs}


def render(kind: str) -> str:
    """The schema as the text ``schema KIND`` prints and docs/schema/ publishes."""
    return json.dumps(json_schema(kind), indent=2) + "\n"


def cmd_schema(args: argparse.Namespace) -> int:
    print(render(args.kind), end="")
    return EXIT_OK
