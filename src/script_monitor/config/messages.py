"""What is wrong with a value that does not fit the schema, in our own words: msgspec
says whether an item converts; a refused one is walked here key by key."""

import operator
import re
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec

from ..errors import Problem
from .schema import ENV_NAME_PATTERN, EVENTS, KEY_PATTERN, NAME_PATTERN
from .yamlread import Document

# ---------------------------------------------------------------- validation

# Our wording of what a key expects and of what it got: per kind of value.
_WORDS = {
    str: "a string",
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    list: "a list",
    dict: "a mapping",
    type(None): "nothing",
}
# ... and of a pattern a string must match.
_PATTERN_WORDS = {
    NAME_PATTERN: "invalid name {}: use letters, digits, '_', '.' and '-' only",
    ENV_NAME_PATTERN: "invalid variable name {}",
    KEY_PATTERN: "a key is 16 to 128 letters, digits, '-' or '_'",
}
# The choices of a key whose values are listed (Literal): by key, else the Literal's values.
_CHOICES = {"on": ", ".join(EVENTS)}


def _convert(data: Any, typ: type, doc: Document, base: tuple, label: str, out: list) -> Any:
    """Validate ``data`` as ``typ``; record every problem found (one per key).

    msgspec converts what is valid.  What it refuses is walked here against the same
    types, key by key, so that each problem names its key and says what was expected
    in our words; the keys found wrong are left out and the rest converted."""
    if not isinstance(data, dict):
        out.append(Problem.error(doc.path, doc.line(base), f"{label}: expected a mapping"))
        return None
    try:
        return msgspec.convert(data, typ, strict=False)
    except msgspec.ValidationError as e:
        refusal = str(e)
    fields = {f.encode_name: f for f in msgspec.structs.fields(typ)}
    good, found = {}, 0
    for key, value in data.items():
        field = fields.get(key)
        problem = ((key,), "unknown key") if field is None else _problem(value, field.type, (key,))
        if problem is None:
            good[key] = value
            continue
        found += 1
        out.append(_problem_at(problem, doc, base, label))
    missing = [f.encode_name for f in fields.values() if f.required and f.encode_name not in data]
    for key in missing:
        text = f"{label}: missing required key '{key}'"
        out.append(Problem.error(doc.path, doc.line(base), text))
    if missing or any(f.required and f.encode_name not in good for f in fields.values()):
        return None
    try:
        return msgspec.convert(good, typ, strict=False)
    except msgspec.ValidationError:
        if not found:  # the walk below found nothing msgspec refuses: say what it said
            out.append(Problem.error(doc.path, doc.line(base), f"{label}: {refusal}"))
        return None


def _problem_at(problem: tuple[tuple, str], doc: Document, base: tuple, label: str) -> Problem:
    path, message = problem
    where = ".".join(str(p) for p in path)
    if message == "unknown key":
        text = f"unknown key '{path[-1]}'"
        if len(path) > 1:
            text = f"in '{'.'.join(str(p) for p in path[:-1])}': {text}"
    elif message.startswith("missing required key"):
        text = message
    else:
        text = f"key '{where}': {message}"
    return Problem.error(doc.path, doc.line(base + path), f"{label}: {text}")


def _problem(value: Any, typ: Any, path: tuple) -> tuple[tuple, str] | None:
    """The first problem of ``value`` as ``typ`` (msgspec's order: keys as they come),
    as (path, our message); None if msgspec accepts it."""
    try:
        msgspec.convert(value, typ, strict=False)
        return None
    except msgspec.ValidationError:
        pass
    typ, meta = _unwrap(typ)
    origin = get_origin(typ)
    if origin in (Union, UnionType):
        members = [m for m in get_args(typ) if m is not type(None)]  # null: the unset default
        if len(members) == 1:
            return _problem(value, members[0], path)
        member = next((m for m in members if _fits(value, _unwrap(m)[0])), None)
        if member is None:
            return path, f"expected {_union_words(members)}, got {_got(value)}"
        return _problem(value, member, path)
    if origin is Literal:
        if not isinstance(value, str):
            return path, f"expected a string, got {_got(value)}"
        key = next((p for p in reversed(path) if isinstance(p, str)), "")
        choices = _CHOICES.get(key) or _either([str(v) for v in get_args(typ)])
        return path, f"invalid value {value!r}: expected {choices}"
    if not _fits(value, typ):
        return path, f"expected {_WORDS[_kind(typ)]}, got {_got(value)}"
    if isinstance(typ, type) and issubclass(typ, msgspec.Struct):
        return _struct_problem(value, typ, path)
    if origin is dict:
        return _mapping_problem(value, typ, path)
    if origin is list:
        (item,) = get_args(typ)
        for i, x in enumerate(value):
            found = _problem(x, item, (*path, i))
            if found is not None:
                return found
    return _bound_problem(value, typ, meta, path)


def _struct_problem(value: dict, typ: type, path: tuple) -> tuple[tuple, str] | None:
    fields = {f.encode_name: f for f in msgspec.structs.fields(typ)}
    for key, x in value.items():
        if key not in fields:
            return (*path, key), "unknown key"
        found = _problem(x, fields[key].type, (*path, key))
        if found is not None:
            return found
    for f in fields.values():
        if f.required and f.encode_name not in value:
            where = ".".join(str(p) for p in path)
            return path, f"missing required key '{f.encode_name}' in '{where}'"
    return None


def _mapping_problem(value: dict, typ: Any, path: tuple) -> tuple[tuple, str] | None:
    key_type, value_type = get_args(typ)
    for key, x in value.items():
        if _problem(key, key_type, path) is not None:
            pattern = next((m.pattern for m in _unwrap(key_type)[1] if m.pattern), None)
            if pattern is None or not isinstance(key, str):
                return _problem(key, key_type, path)
            bad = [k for k in value if not (isinstance(k, str) and re.search(pattern, k))]
            return path, _PATTERN_WORDS[pattern].format(", ".join(repr(k) for k in bad))
        found = _problem(x, value_type, (*path, key))
        if found is not None:
            return found
    return None


def _bound_problem(value: Any, typ: Any, meta: list, path: tuple) -> tuple[tuple, str] | None:
    """A value of the right kind that breaks a limit of its type (``msgspec.Meta``)."""
    words = _WORDS[_kind(typ)]
    for m in meta:
        for sign, limit, holds in (
            (">=", m.ge, operator.ge),
            (">", m.gt, operator.gt),
            ("<=", m.le, operator.le),
            ("<", m.lt, operator.lt),
        ):
            if limit is not None and not holds(value, limit):
                return path, f"expected {words} {sign} {limit:g}, got {value!r}"
        if m.min_length is not None and len(value) < m.min_length:
            return path, f"expected {words} of length >= {m.min_length}, got {value!r}"
        if m.pattern is not None and not re.search(m.pattern, value):
            return path, _PATTERN_WORDS[m.pattern].format(repr(value))
    return None


def _unwrap(typ: Any) -> tuple[Any, list]:
    """``Annotated[T, Meta(...)]`` -> (T, [Meta, ...]); any other type -> (it, [])."""
    if get_origin(typ) is Annotated:
        base, *meta = get_args(typ)
        return base, [m for m in meta if isinstance(m, msgspec.Meta)]
    return typ, []


def _kind(typ: Any) -> type:
    """The kind of value a (non-union) type takes, as a key of ``_WORDS``."""
    origin = get_origin(typ) or typ
    if origin is Literal:
        return str
    if isinstance(origin, type) and issubclass(origin, msgspec.Struct):
        return dict
    return origin if origin in _WORDS else dict


def _fits(value: Any, typ: Any) -> bool:
    """Whether ``value`` is of the kind ``typ`` takes (its content aside): the member of
    a union msgspec checks it against."""
    kind = _kind(typ)
    if isinstance(value, bool) or kind is bool:
        return isinstance(value, bool) and kind is bool
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def _union_words(members: list) -> str:
    kinds = [_kind(_unwrap(m)[0]) for m in members]
    words = []
    for kind in (str, int, float, bool, list, dict):
        if kind not in kinds or (kind is int and float in kinds):
            continue
        # beside another kind: a list of strings (or of numbers, for a command's words)
        words.append({bool: "true/false", list: "a list of strings"}.get(kind, _WORDS[kind]))
    return _either(words)


def _either(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _got(value: Any) -> str:
    return _WORDS.get(type(value), type(value).__name__)
