"""graph: a group's dependency graph as text, Graphviz dot or Mermaid."""

from __future__ import annotations

import argparse
import json

from ..config import Group
from ..errors import EXIT_OK
from . import load


def edges(group: Group) -> list[tuple[str, str]]:
    """Every (dependency, dependent) pair, in the group's order."""
    return [(dep, name) for name in group.scripts for dep in group.needs(name)]


def render(group: Group, fmt: str) -> str:
    """The graph in ``fmt`` (text, dot or mermaid)."""
    pairs = edges(group)
    if fmt == "dot":
        lines = [f"digraph {json.dumps(group.name)} {{", "  rankdir=LR;"]
        lines += [f"  {json.dumps(name)};" for name in group.scripts]
        lines += [f"  {json.dumps(a)} -> {json.dumps(b)};" for a, b in pairs]
        return "\n".join([*lines, "}"])
    if fmt == "mermaid":
        ids = {name: f"n{i}" for i, name in enumerate(group.scripts)}
        lines = ["graph LR"]
        lines += [f'  {ids[name]}["{_mermaid_text(name)}"]' for name in group.scripts]
        lines += [f"  {ids[a]} --> {ids[b]}" for a, b in pairs if a in ids and b in ids]
        return "\n".join(lines)
    mode = group.execution + (", stop_on_error" if group.stop_on_error else "")
    lines = [f"Group: {group.name} [execution: {mode}]", "Scripts:"]
    for name in group.scripts:
        needs = group.needs(name)
        lines.append(f"  {name}" + (f" (needs {', '.join(needs)})" if needs else ""))
    lines.append("Edges:" if pairs else "Edges: (none: no depends_on)")
    lines += [f"  {a} -> {b}" for a, b in pairs]
    return "\n".join(lines)


def _mermaid_text(name: str) -> str:
    return name.replace('"', "#quot;")


def cmd_graph(args: argparse.Namespace) -> int:
    config = load(args)
    print(render(config.group(args.name), args.format))
    return EXIT_OK
