"""Reading one YAML file with the line of every key and item: the only YAML reader.

PyYAML is imported when a file is read, not before: a command whose files are all
kept (``loading.ItemCache``) never reads one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import Problem

if TYPE_CHECKING:
    import yaml

# ---------------------------------------------------------------- YAML reading


class Document(msgspec.Struct):
    """A parsed YAML file with the line of every mapping key and list item."""

    path: Path
    data: Any
    lines: dict[tuple, int]

    def line(self, path: tuple) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)


def read_yaml(path: Path, problems: list[Problem], empty_ok: bool = False) -> Document | None:
    """Parse one YAML file; on failure add a problem and return None.

    An empty (or comments-only) file is a problem unless ``empty_ok``: then its data is None.
    """
    try:
        raw = path.read_bytes()
    except OSError as e:
        problems.append(Problem.error(path, None, f"cannot read file: {e.strerror}"))
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        problems.append(Problem.error(path, line, f"not valid UTF-8 text (byte {e.start})"))
        return None
    if not text.strip() or all(
        not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()
    ):
        if empty_ok:
            return Document(path, None, {})
        problems.append(Problem.error(path, 1, "file is empty"))
        return None
    import yaml

    loader = yaml.CSafeLoader(text) if yaml.__with_libyaml__ else yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[tuple, int] = {}
        _index_node(node, (), lines, path, problems)
        data = loader.construct_document(node) if node is not None else None
        nul = _nul_path(data, ())
        if nul is not None:  # no file name, command or variable can hold one: os calls fail
            where = Document(path, data, lines).line(nul)
            problems.append(Problem.error(path, where, "a NUL character (\\0) is not allowed"))
            return None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        start = getattr(e, "context_mark", None)
        if start is not None and mark is not None and mark.line >= len(text.splitlines()):
            # An unclosed quote or bracket is noticed at the end of the file: name its start.
            mark = start
        at = mark.line + 1 if mark is not None else None
        problems.append(Problem.error(path, at, f"invalid YAML: {_yaml_reason(e, text, mark)}"))
        return None
    except (ValueError, TypeError, OverflowError, RecursionError, LookupError) as e:
        # PyYAML's constructors raise these on odd input, e.g. IndexError for "!!int ''"
        problems.append(Problem.error(path, None, f"invalid YAML: {e}"))
        return None
    finally:
        loader.dispose()
    return Document(path, data, lines)


def _yaml_reason(e: yaml.YAMLError, text: str, mark: Any) -> str:
    reason = getattr(e, "problem", None) or str(e)
    context = getattr(e, "context", None)
    if mark is not None:
        lines = text.splitlines()
        if mark.line < len(lines) and "\t" in lines[mark.line]:
            return f"{reason} (tabs are not allowed for indentation; use spaces)"
    return f"{reason} {context}" if context else reason


def _nul_path(data: Any, path: tuple) -> tuple | None:
    """The path of the first key or string value holding a NUL character, if any."""
    if isinstance(data, str):
        return path if "\0" in data else None
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, str) and "\0" in key:
                return path
            found = _nul_path(value, (*path, key))
            if found is not None:
                return found
    elif isinstance(data, list):
        for i, item in enumerate(data):
            found = _nul_path(item, (*path, i))
            if found is not None:
                return found
    return None


MAX_YAML_NODES = 200_000  # far above any real configuration; aliases can multiply nodes


def _index_node(node: Any, path: tuple, lines: dict, file: Path, problems: list) -> None:
    import yaml  # already imported by read_yaml: a lookup

    if node is None:
        return
    if len(lines) > MAX_YAML_NODES:  # an alias bomb would expand without bound below
        raise ValueError(
            f"more than {MAX_YAML_NODES} values once aliases are expanded; use fewer aliases"
        )
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key_node.tag == "tag:yaml.org,2002:bool":  # YAML 1.1 `on:`/`yes:` keys stay text
                key_node.tag = "tag:yaml.org,2002:str"
            if key in seen:
                problems.append(
                    Problem.error(file, key_node.start_mark.line + 1, f"duplicate key '{key}'")
                )
            seen.add(key)
            lines[(*path, key)] = key_node.start_mark.line + 1
            _index_node(value_node, (*path, key), lines, file, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_node(item, (*path, i), lines, file, problems)
