"""Loading a config directory: its files, their items (kept between commands while
unchanged), the cross-checks; ``get-setting``."""

import contextlib
import os
import re
import time
from pathlib import Path
from typing import Any

import msgspec

from ..errors import ConfigError, Problem
from .checks import (
    _check_check_fields,
    _check_checks,
    _check_env_files,
    _check_item,
    _check_notifications,
    _check_notify_channels,
    _check_notify_fields,
    _check_permissions,
    _check_secret_files,
    _check_settings,
    _check_web_tokens,
    _cross_check,
)
from .messages import _convert
from .schema import CHECKS_FILE, Check, Config, Group, Script, Settings
from .yamlread import read_yaml

# ---------------------------------------------------------------- loading


def config_dir_from(cli_value: str | None) -> Path:
    """The config directory: --config-dir, else $SCRIPT_MONITOR_HOME, else the cwd."""
    value = cli_value or os.environ.get("SCRIPT_MONITOR_HOME") or os.getcwd()
    return Path(value).expanduser().resolve()


def _sources(root: Path, value: str, default_name: str, problems: list) -> list[Path]:
    """The YAML files behind a scripts_file/groups_file setting (file or directory)."""
    path = (root / value).resolve()
    candidates = [path]
    if value == default_name:
        candidates.append(path.with_suffix(""))  # scripts.yaml -> scripts/
    for candidate in candidates:
        if candidate.is_dir():
            return sorted(
                p for p in candidate.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()
            )
        if candidate.is_file():
            return [candidate]
    if value != default_name:
        problems.append(Problem.error(root / "config.yaml", None, f"'{value}' does not exist"))
    return []


def load_config(root: Path) -> Config:
    """Load and validate a config directory; raise ConfigError listing every problem."""
    problems: list[Problem] = []
    try:
        os.listdir(root)
    except FileNotFoundError:
        raise ConfigError([Problem.error(root, None, "config directory does not exist")]) from None
    except OSError as e:  # e.g. a directory this user may not read: a message, not a crash
        raise ConfigError(
            [Problem.error(root, None, f"cannot read the config directory: {e.strerror}")]
        ) from None
    settings = Settings()
    files: list[Path] = []
    origin: dict[str, tuple[Path, int]] = {}
    cfg_path = root / "config.yaml"
    cache = ItemCache((root / Settings().paths.state_dir).resolve())
    if cfg_path.exists():
        files.append(cfg_path)
        settings = cache.load_settings(cfg_path, origin, problems)
    paths = settings.paths
    scripts: dict[str, Script] = {}
    groups: dict[str, Group] = {}
    state_dir = (root / os.path.expanduser(paths.state_dir)).resolve()
    if state_dir != cache.dir:  # config.yaml is kept in the default state folder only
        cache = ItemCache(state_dir)
    cache.settings = settings
    for file in _sources(root, paths.scripts_file, "scripts.yaml", problems):
        files.append(file)
        cache.load(file, "scripts", Script, scripts, origin, problems)
    for file in _sources(root, paths.groups_file, "groups.yaml", problems):
        files.append(file)
        cache.load(file, "groups", Group, groups, origin, problems)

    checks: dict[str, Check] = {}
    for file in _sources(root, CHECKS_FILE, CHECKS_FILE, problems):
        files.append(file)
        _load_items(file, "checks", Check, checks, origin, problems)
    config = Config(root, settings, scripts, groups, files, checks=checks, origin=origin)
    if not any(p.level == "error" for p in problems):  # else members would look missing
        _cross_check(config, problems)
        _check_notify_channels(config, problems)
    _check_checks(config, problems)  # names only: told even beside other problems
    _check_env_files(config, problems)
    _check_permissions(config, problems)
    _check_secret_files(config, problems)
    errors = [p for p in problems if p.level == "error"]
    warnings = [p for p in problems if p.level == "warning"]
    if settings.validation.strict and warnings:
        errors += [w.as_error() for w in warnings]
    if errors:
        raise ConfigError(errors, warnings)
    cache.save()
    config.warnings = warnings
    return config


def _read_settings(cfg_path: Path, origin: dict, problems: list) -> Settings:
    """config.yaml, converted and checked (an empty file: every default)."""
    doc = read_yaml(cfg_path, problems, empty_ok=True)
    if doc is None or doc.data is None:
        return Settings()
    settings = _convert(doc.data, Settings, doc, (), "config", problems) or Settings()
    _check_settings(settings, doc, problems)
    origin["setting:env_file"] = (cfg_path, doc.line(("env_file",)) or 1)
    _check_notifications(settings, doc, problems, origin)
    _check_web_tokens(settings, doc, problems, origin)
    return settings


# ---------------------------------------------- the parsed scripts and groups, kept


class _Kept(msgspec.Struct, array_like=True):
    """One scripts/groups file as it was last loaded without error."""

    stamp: list[int]  # the file's size, mtime, inode, ctime; this package's files' too
    items: msgspec.Raw  # list[Script] or list[Group], as converted and checked
    origin: list[tuple[str, Any]]  # (key, line) or (key, {node: line}) within the file
    warnings: list[tuple[int | None, str]]


RACY_NS = 2_000_000_000  # a file changed this recently is read again next time
_URL_SECRET = re.compile(  # a URL's password, or a query parameter named like a secret
    rb"[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*:[^\s/@]+@|[?&;][^=&;#\s]*"
    rb"(?:token|key|secret|passw|pwd|signature|auth|credential|session)[^=&;#\s]*=[^&;#\s]",
    re.IGNORECASE,
)


def _holds_secrets(file: Path, settings: Settings, items: list | None = None) -> bool:
    """Whether a kept copy of ``file`` would hold a secret (docs/SECURITY.md): a URL with
    a password or a secret-looking query parameter; in config.yaml a web token or a
    notification channel (their URLs carry credentials); in a scripts file the value of
    a ``secret_env`` variable. Such a file is read every time: a secret is in no file
    but its own."""
    try:
        if _URL_SECRET.search(file.read_bytes()):
            return True
    except OSError:
        return True
    if items is None:
        web = settings.web
        return bool(
            settings.notifications.channels or web.token or any(t.token for t in web.tokens)
        )
    named = set(settings.secret_env)
    return any(
        getattr(item, "secret_env", None) or named.intersection(getattr(item, "env", None) or ())
        for item in items
    )


CODE = ("schema.py", "yamlread.py", "messages.py", "checks.py", "loading.py")


class ItemCache:
    """The converted items of each scripts/groups file and the settings of config.yaml,
    kept in the state folder (``config-cache.msgpack``, mode 0600) and used again while
    the file and this package are unchanged: parsing YAML is most of the start-up of a
    command on a configuration of thousands of scripts, and a command whose every file
    is kept does not even import the YAML parser. Anything unusual (no state folder, a
    damaged or foreign file, a duplicate name across files) falls back to reading the
    YAML."""

    FILE = "config-cache.msgpack"

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.path = state_dir / self.FILE
        self.settings = Settings()  # config.yaml's, once read: its secret_env names
        self.kept: dict[str, _Kept] = {}
        self.fresh: dict[str, _Kept] = {}
        self.code: list[int] = []
        try:
            for module in CODE:  # the items' schema and the checks they passed
                st = os.stat(os.path.join(os.path.dirname(__file__), module))
                self.code += [st.st_size, st.st_mtime_ns]
            self.kept = msgspec.msgpack.decode(self.path.read_bytes(), type=dict[str, _Kept])
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            self.kept = {}

    def _stamp(self, file: Path) -> list[int] | None:
        try:
            st = os.stat(file)
        except OSError:
            return None
        return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, *self.code]

    def _kept(self, file: Path) -> tuple[list[int] | None, _Kept | None]:
        """The file's stamp now, and its kept copy if that is still the file's."""
        stamp = self._stamp(file)
        kept = self.kept.get(str(file))
        if stamp is None or kept is None or kept.stamp != stamp:
            return stamp, None
        return stamp, kept

    def _keepable(self, stamp: list[int] | None, added: list[Problem]) -> bool:
        """Whether what was just read may be kept: read without error, and not changed
        just now (a change in the same clock tick would look the same)."""
        if stamp is None or any(p.level == "error" for p in added):
            return False
        return time.time_ns() - stamp[1] >= RACY_NS

    def load_settings(self, file: Path, origin: dict, problems: list) -> Settings:
        """``_read_settings``, from the kept copy when it is still the file's."""
        stamp, kept = self._kept(file)
        if kept is not None:
            try:
                settings = msgspec.msgpack.decode(kept.items, type=Settings)
            except (msgspec.DecodeError, msgspec.ValidationError):
                settings = None
            if settings is not None:
                for name, where in kept.origin:
                    origin[name] = (file, where)
                problems.extend(Problem.warning(file, line, text) for line, text in kept.warnings)
                self.fresh[str(file)] = kept
                return settings
        before, known = len(problems), len(origin)
        settings = _read_settings(file, origin, problems)
        added = problems[before:]
        if self._keepable(stamp, added) and not _holds_secrets(file, settings):
            self.fresh[str(file)] = _Kept(
                stamp or [],
                msgspec.Raw(msgspec.msgpack.encode(settings)),
                [(name, origin[name][1]) for name in list(origin)[known:]],
                [(p.line, p.message) for p in added if p.level == "warning"],
            )
        return settings

    def load(
        self,
        file: Path,
        key: str,
        typ: type[Script] | type[Group],
        into: dict,
        origin: dict,
        problems: list,
    ) -> None:
        """``_load_items``, from the kept copy when it is still the file's."""
        stamp, kept = self._kept(file)
        if kept is not None:
            items: list[Script] | list[Group] | None
            try:
                items = msgspec.msgpack.decode(kept.items, type=list[typ])  # type: ignore[valid-type]
            except (msgspec.DecodeError, msgspec.ValidationError):
                items = None
            if items is not None and not any(item.name in into for item in items):
                for item in items:
                    into[item.name] = item
                for name, where in kept.origin:
                    origin[name] = (file, where) if isinstance(where, int) else where
                problems.extend(Problem.warning(file, line, text) for line, text in kept.warnings)
                self.fresh[str(file)] = kept
                return
        before, known = len(problems), len(origin)
        _load_items(file, key, typ, into, origin, problems)
        added = problems[before:]
        if stamp is None or not self._keepable(stamp, added):
            return
        names = list(origin)[known:]
        entries = []
        for name in names:
            where = origin[name]
            if isinstance(where, tuple):
                if where[0] != file:
                    return  # not this file's: keep nothing rather than something wrong
                where = where[1]
            entries.append((name, where))
        prefix = f"{key[:-1]}:"  # script:NAME or group:NAME, one per item
        items = [into[n[len(prefix) :]] for n in names if n.startswith(prefix)]
        if _holds_secrets(file, self.settings, items):
            return
        self.fresh[str(file)] = _Kept(
            stamp,
            msgspec.Raw(msgspec.msgpack.encode(items)),
            entries,
            [(p.line, p.message) for p in added if p.level == "warning"],
        )

    def save(self) -> None:
        """Keep what this load read, when it differs from what was kept."""
        if self.fresh == self.kept or not self.path.parent.is_dir():
            return  # never the first thing written: a mistyped command writes nothing
        tmp = self.path.with_name(f".{self.FILE}.{os.getpid()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(msgspec.msgpack.encode(self.fresh))
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()


def _load_items(file: Path, key: str, typ: type, into: dict, origin: dict, problems: list) -> None:
    optional = key != "scripts"  # an empty groups or checks file: none; scripts must exist
    doc = read_yaml(file, problems, empty_ok=optional)
    if doc is None or (optional and doc.data is None):
        return
    data = doc.data
    kind = key[:-1]
    if not isinstance(data, dict):
        problems.append(Problem.error(file, 1, f"expected a mapping with a '{key}:' list"))
        return
    for extra in data:
        if extra != key:
            problems.append(
                Problem.error(file, doc.line((extra,)), f"unknown top-level key '{extra}'")
            )
    items = data.get(key)
    if items is None and optional:  # `groups:` with every item commented out
        return
    if not isinstance(items, list):
        got = "nothing" if items is None else type(items).__name__
        problems.append(
            Problem.error(file, doc.line((key,)), f"'{key}' must be a list of {key}, got {got}")
        )
        return
    for i, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) else None
        label = f"{kind} '{name}'" if isinstance(name, str) else f"{kind} #{i + 1}"
        obj = _convert(item, typ, doc, (key, i), label, problems)
        if obj is None:
            continue
        line = doc.line((key, i))
        if obj.name in into:
            first_file, first_line = origin[f"{kind}:{obj.name}"]
            problems.append(
                Problem.error(
                    file,
                    line,
                    f"duplicate {kind} name '{obj.name}' (first defined in "
                    f"{first_file.name}:{first_line})",
                )
            )
            continue
        into[obj.name] = obj
        origin[f"{kind}:{obj.name}"] = (file, line)
        if isinstance(obj, Group):
            for j, member in enumerate(obj.scripts):
                origin.setdefault(
                    f"member:{obj.name}:{member}", (file, doc.line((key, i, "scripts", j)))
                )
            if obj.depends_on:
                origin[f"depends:{obj.name}"] = {
                    node: doc.line((key, i, "depends_on", node)) for node in obj.depends_on
                }
        elif isinstance(obj, Check):
            _check_check_fields(obj, doc, (key, i), label, problems)
            _check_notify_fields(obj, doc, (key, i), label, problems, origin)
            continue
        elif isinstance(obj.command, list):  # `[sleep, 5]`: YAML numbers are argv words too
            obj.command = [a if isinstance(a, str) else str(a) for a in obj.command]
        _check_item(obj, doc, (key, i), label, problems)
        _check_notify_fields(obj, doc, (key, i), label, problems, origin)


# ---------------------------------------------------------------- settings


def get_setting(settings: Settings, key: str) -> Any:
    """The effective value of a dotted key; KeyError for an unknown key."""
    value: Any = settings
    for part in key.split("."):
        if not isinstance(value, msgspec.Struct) or part not in value.__struct_fields__:
            raise KeyError(key)
        value = getattr(value, part)
    return value


def to_builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)
