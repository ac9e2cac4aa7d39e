"""Configuration: schema, loading from files or directories, cross-checks.

This is the only module that reads the user's YAML. It never writes it.
Every problem is reported with the file and line it comes from.
"""

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import msgspec
import yaml

from .errors import ConfigError, Problem, UnknownName
from .states import FAILURES, RunStatus

NAME_PATTERN = r"^(?!\.{1,2}$)[A-Za-z0-9_.-]{1,128}$"
Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
Seconds = Annotated[float, msgspec.Meta(ge=0)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
EnvValue = str | int | float | bool
EnvName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


# Notifications and output alerts (docs/NOTIFICATIONS.md); checked at the end of this file.
Event = Literal["failure", "recovery", "success", "output", "missed", "overdue"]
EVENTS: tuple[str, ...] = get_args(Event)
DEFAULT_ON: list[Event] = ["failure", "recovery", "missed", "overdue"]


class NotifySpec(_Strict):
    channels: list[str] | None = None  # None: the default's
    on: list[Event] | None = None


class Alert(_Strict):
    pattern: Annotated[str, msgspec.Meta(min_length=1)]
    severity: Literal["info", "warning", "critical"] = "warning"
    fail: bool = False


class Notifications(_Strict):
    channels: dict[Name, Annotated[list[str], msgspec.Meta(min_length=1)]] = {}
    default: NotifySpec = msgspec.field(default_factory=NotifySpec)
    timeout: Seconds = 10


class LogLimit(_Strict):
    type: Literal["count", "age"]
    value: Annotated[int, msgspec.Meta(ge=0)]


class Retries(_Strict):
    """How a failed run is tried again (docs/CONFIG.md)."""

    count: Annotated[int, msgspec.Meta(ge=0)] = 0
    delay: Seconds = 10
    backoff: Annotated[float, msgspec.Meta(ge=1)] = 2
    max_delay: Seconds = 300
    exit_codes: list[int] | None = None

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt`` (2 is the first retry)."""
        return min(self.delay * self.backoff ** max(attempt - 2, 0), self.max_delay)

    def retries(self, status: str, exit_code: int | None, attempt: int) -> bool:
        """Whether an attempt that ended with ``status`` is tried again."""
        if attempt > self.count or status not in FAILURES:
            return False
        if self.exit_codes is not None:
            return status == RunStatus.FAILED and exit_code in self.exit_codes
        return True


NO_RETRIES = Retries()


class Script(_Strict):
    name: Name
    command: (
        Annotated[str, msgspec.Meta(min_length=1)]
        | Annotated[list[str | int | float], msgspec.Meta(min_length=1)]
    )
    description: str = ""
    timeout: Seconds | None = None
    env: dict[EnvName, EnvValue] = {}
    cwd: str | None = None
    log_limit: LogLimit | None = None
    env_file: str | None = None
    secret_env: list[EnvName] = []
    leftovers: Literal["keep", "kill"] = "keep"
    retries: Annotated[int, msgspec.Meta(ge=0)] | Retries = 0
    queue: Name | None = None  # the Celery queue its runs go to (docs/DISTRIBUTED.md)
    notify: NotifySpec | bool | None = None
    alerts: list[Alert] = []
    max_duration: Seconds | None = None


class Group(_Strict):
    name: Name
    description: str = ""
    execution: Literal["serial", "parallel"] = "serial"
    stop_on_error: bool = False
    schedule: str | None = None
    scripts: list[str] = []
    max_parallel_workers: Positive | None = None
    timezone: str | None = None
    overlap: Literal["skip", "queue", "allow"] = "skip"
    catchup: Literal["skip", "latest"] = "latest"
    notify: NotifySpec | bool | None = None
    max_duration: Seconds | None = None
    depends_on: dict[str, list[str] | str] = {}

    def needs(self, member: str) -> list[str]:
        """The members ``member`` depends on directly."""
        value = self.depends_on.get(member, [])
        return [value] if isinstance(value, str) else value


class Execution(_Strict):
    max_parallel_workers: Positive = 5
    default_timeout: Seconds = 300
    kill_grace: Seconds = 5
    backend: Literal["local", "celery"] = "local"
    lost_after: Annotated[float, msgspec.Meta(gt=0)] = 60
    # seconds a dispatched run may wait for a worker before it is lost (docs/DISTRIBUTED.md)
    claim_timeout: Annotated[float, msgspec.Meta(gt=0)] = 60


class StoreSettings(_Strict):
    url: str | None = None  # postgresql://...; default: SQLite in the state folder
    retry_for: Seconds = 60  # how long a shared store may be out of reach


class HistorySettings(_Strict):
    """How long finished runs stay in the history (docs/CONFIG.md)."""

    retention: Annotated[float, msgspec.Meta(ge=0)] = 90  # days; 0 keeps everything
    keep_runs: Annotated[int, msgspec.Meta(ge=0)] = 100  # per script and group, however old


class CelerySettings(_Strict):
    broker_url: str = "redis://127.0.0.1:6379/0"
    queue: Name = "script-monitor"
    visibility_timeout: Annotated[float, msgspec.Meta(gt=0)] | None = None


class Paths(_Strict):
    log_dir: str = "logs"
    scripts_file: str = "scripts.yaml"
    groups_file: str = "groups.yaml"
    state_dir: str = ".script-monitor"


class Scheduling(_Strict):
    enabled: bool = True
    timezone: str = "local"
    catchup_grace: Seconds = 3600
    shutdown_grace: Seconds = 30
    missed_grace: Seconds = 300
    # seconds before a standby scheduler takes over from a silent leader
    lease_ttl: Annotated[float, msgspec.Meta(gt=0)] = 15


class Validation(_Strict):
    strict: bool = False
    warn_unused_scripts: bool = True
    warn_empty_groups: bool = True


class Display(_Strict):
    use_colors: bool = True
    date_format: str = "%d %b %H:%M"


class WebToken(_Strict):
    """One named token of ``web.tokens`` and what it may do (docs/SECURITY.md)."""

    name: Name
    role: Literal["viewer", "operator", "admin"] = "viewer"
    token: str | None = None  # the value, or ${VAR}
    token_file: str | None = None  # a file holding it (relative to the config directory)


class Web(_Strict):
    """``serve``: where the dashboard listens and who may use it (docs/WEB.md)."""

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8787
    token: str | None = None  # SCRIPT_MONITOR_WEB_TOKEN wins over it; an admin token
    tokens: list[WebToken] = []
    metrics_auth: bool = False
    allowed_hosts: list[str] = []  # extra Host names, e.g. the reverse proxy's public name
    max_launches: Positive = 16  # runs started from the web that may be alive at once


class Settings(_Strict):
    execution: Execution = msgspec.field(default_factory=Execution)
    default_log_limit: LogLimit = msgspec.field(
        default_factory=lambda: LogLimit(type="count", value=10)
    )
    paths: Paths = msgspec.field(default_factory=Paths)
    scheduling: Scheduling = msgspec.field(default_factory=Scheduling)
    validation: Validation = msgspec.field(default_factory=Validation)
    display: Display = msgspec.field(default_factory=Display)
    web: Web = msgspec.field(default_factory=Web)
    store: StoreSettings = msgspec.field(default_factory=StoreSettings)
    history: HistorySettings = msgspec.field(default_factory=HistorySettings)
    celery: CelerySettings = msgspec.field(default_factory=CelerySettings)
    env_file: str | None = None
    secret_env: list[EnvName] = []
    notifications: Notifications = msgspec.field(default_factory=Notifications)


class Config(msgspec.Struct):
    """The loaded, validated configuration of one config directory."""

    root: Path
    settings: Settings
    scripts: dict[str, Script]
    groups: dict[str, Group]
    files: list[Path] = msgspec.field(default_factory=list)
    warnings: list[Problem] = msgspec.field(default_factory=list)
    origin: dict[str, Any] = msgspec.field(default_factory=dict)

    def path(self, value: str) -> Path:
        """Resolve a configured path relative to the config directory."""
        return (self.root / os.path.expanduser(value)).resolve()

    @property
    def log_dir(self) -> Path:
        return self.path(self.settings.paths.log_dir)

    @property
    def state_dir(self) -> Path:
        return self.path(self.settings.paths.state_dir)

    @property
    def store_url(self) -> str | None:
        """$SCRIPT_MONITOR_STORE_URL, else ``store.url``; None for SQLite."""
        return os.environ.get("SCRIPT_MONITOR_STORE_URL") or self.settings.store.url

    def timeout_for(self, script: Script) -> float:
        return self.settings.execution.default_timeout if script.timeout is None else script.timeout

    def log_limit_for(self, script: Script) -> LogLimit:
        return script.log_limit or self.settings.default_log_limit

    def workers_for(self, group: Group) -> int:
        return group.max_parallel_workers or self.settings.execution.max_parallel_workers

    def retries_for(self, script: Script) -> Retries:
        if isinstance(script.retries, Retries):
            return script.retries
        return Retries(count=script.retries) if script.retries else NO_RETRIES

    def zone_of(self, group: Group) -> str:
        """The time zone a group's schedule is read in."""
        return group.timezone or self.settings.scheduling.timezone

    def script(self, name: str) -> Script:
        try:
            return self.scripts[name]
        except KeyError:
            hint = f"'{name}' is a group" if name in self.groups else ""
            raise UnknownName("script", name, self.scripts, hint) from None

    def group(self, name: str) -> Group:
        try:
            return self.groups[name]
        except KeyError:
            hint = f"'{name}' is a script" if name in self.scripts else ""
            raise UnknownName("group", name, self.groups, hint) from None


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


# ---------------------------------------------------------------- validation

_ERROR_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_TYPE_WORDS = {
    "`float`": "a number",
    "`int`": "a whole number",
    "`str`": "a string",
    "`bool`": "true or false",
    "`array`": "a list",
    "`object`": "a mapping",
    "`null`": "nothing",
    "`str | array`": "a string or a list of strings",
}
_CHOICES = {
    "execution": "serial or parallel",
    "overlap": "skip, queue or allow",
    "catchup": "skip or latest",
    "leftovers": "keep or kill",
    "type": "count or age",
    "severity": "info, warning or critical",
    "on": ", ".join(EVENTS),
}


def _convert(data: Any, typ: type, doc: Document, base: tuple, label: str, out: list) -> Any:
    """Validate ``data`` as ``typ``; record every problem found (one per key)."""
    if not isinstance(data, dict):
        out.append(Problem.error(doc.path, doc.line(base), f"{label}: expected a mapping"))
        return None
    data = dict(data)
    removed: set = set()
    for _ in range(64):
        try:
            return msgspec.convert(data, typ, strict=False)
        except msgspec.ValidationError as e:
            key, problem = _describe(str(e), data, doc, base, label)
            missing = re.search(r"missing required key '([^']*)'$", problem.message)
            if not (missing and missing.group(1) in removed):  # not again as "missing"
                out.append(problem)
            if key is None or key not in data:
                return None
            removed.add(key)
            del data[key]
    return None


def _describe(text: str, data: dict, doc: Document, base: tuple, label: str):
    text = text.replace("[...]", "")  # a mapping's value: msgspec does not name the key
    text = re.sub(r" - at `key` in `(\$[^`]*)`$", r" - at `\1`", text)  # a mapping's key
    m = _ERROR_AT.match(text)
    assert m is not None  # the pattern matches any text
    msg, raw_path = m.group("msg"), m.group("path") or ""
    parts: list = [int(i) if i else k for k, i in _PATH_PART.findall(raw_path)]
    unknown = re.match(r"Object contains unknown field `(.*)`", msg)
    if unknown:
        parts.append(unknown.group(1))
        msg = f"unknown key '{unknown.group(1)}'"
    elif msg.startswith("Object missing required field"):
        missing = msg.split("`")[1]
        where = ".".join(str(p) for p in parts)
        msg = f"missing required key '{missing}'" + (f" in '{where}'" if where else "")
        return None, Problem.error(doc.path, doc.line(base + tuple(parts)), f"{label}: {msg}")
    else:
        value = _get(data, parts)
        msg = _humanize(msg, parts, value)
    keyname = ".".join(str(p) for p in parts)
    text = f"{label}: key '{keyname}': {msg}" if parts and not unknown else f"{label}: {msg}"
    if unknown and len(parts) > 1:
        text = f"{label}: in '{'.'.join(str(p) for p in parts[:-1])}': {msg}"
    line = doc.line(base + tuple(parts))
    return (parts[0] if parts else None), Problem.error(doc.path, line, text)


def _get(data: Any, parts: list) -> Any:
    for p in parts:
        try:
            data = data[p]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _humanize(msg: str, parts: list, value: Any) -> str:
    if msg.startswith("Invalid enum value"):
        key = next((p for p in reversed(parts) if isinstance(p, str)), "")
        choices = _CHOICES.get(key, "")
        return f"invalid value {value!r}" + (f": expected {choices}" if choices else "")
    if "matching regex" in msg:
        if parts and parts[0] == "env":
            names = value if isinstance(value, dict) else [value]
            bad = [k for k in names if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(k))]
            return f"invalid variable name {', '.join(repr(k) for k in bad)}"
        return f"invalid name {value!r}: use letters, digits, '_', '.' and '-' only"
    msg = re.sub(r"`([^`]*?) \| null`", r"`\1`", msg)  # null is the unset default
    msg = msg.replace("`bool | int | float | str`", "a string, a number or true/false")
    for word, human in _TYPE_WORDS.items():
        msg = msg.replace(word, human)
    msg = msg.replace("Expected", "expected").replace(">= 0.0", ">= 0")
    if "got" not in msg and value is not None:
        msg += f", got {value!r}"
    elif "length" in msg:
        msg = "must not be empty"
    return msg


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
    if cfg_path.exists():
        files.append(cfg_path)
        doc = read_yaml(cfg_path, problems, empty_ok=True)  # empty: every default
        if doc is not None and doc.data is not None:
            settings = _convert(doc.data, Settings, doc, (), "config", problems) or Settings()
            _check_settings(settings, doc, problems)
            origin["setting:env_file"] = (cfg_path, doc.line(("env_file",)) or 1)
            _check_notifications(settings, doc, problems, origin)
            _check_web_tokens(settings, doc, problems, origin)
    paths = settings.paths
    scripts: dict[str, Script] = {}
    groups: dict[str, Group] = {}
    for file in _sources(root, paths.scripts_file, "scripts.yaml", problems):
        files.append(file)
        _load_items(file, "scripts", Script, scripts, origin, problems)
    for file in _sources(root, paths.groups_file, "groups.yaml", problems):
        files.append(file)
        _load_items(file, "groups", Group, groups, origin, problems)
    config = Config(root, settings, scripts, groups, files, origin=origin)
    if not any(p.level == "error" for p in problems):  # else members would look missing
        _cross_check(config, problems)
        _check_notify_channels(config, problems)
    _check_env_files(config, problems)
    _check_permissions(config, problems)
    _check_secret_files(config, problems)
    errors = [p for p in problems if p.level == "error"]
    warnings = [p for p in problems if p.level == "warning"]
    if settings.validation.strict and warnings:
        errors += [w.as_error() for w in warnings]
    if errors:
        raise ConfigError(errors, warnings)
    config.warnings = warnings
    return config


def _load_items(file: Path, key: str, typ: type, into: dict, origin: dict, problems: list):
    optional = key == "groups"  # an empty groups file means no groups; scripts must exist
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
        elif isinstance(obj.command, list):  # `[sleep, 5]`: YAML numbers are argv words too
            obj.command = [a if isinstance(a, str) else str(a) for a in obj.command]
        _check_item(obj, doc, (key, i), label, problems)
        _check_notify_fields(obj, doc, (key, i), label, problems, origin)


def _check_item(obj: Script | Group, doc: Document, base: tuple, label: str, problems: list):
    if isinstance(obj, Script):
        if isinstance(obj.command, list) and any(not a for a in obj.command[:1]):
            problems.append(
                Problem.error(doc.path, doc.line((*base, "command")), f"{label}: empty program")
            )
        return
    where = doc.line(base)
    if obj.schedule is not None:
        reason = cron_problem(obj.schedule)
        if reason:
            problems.append(
                Problem.error(
                    doc.path,
                    doc.line((*base, "schedule")),
                    f"{label}: invalid cron expression {obj.schedule!r}: {reason}",
                )
            )
    if obj.timezone is not None and not valid_timezone(obj.timezone):
        problems.append(
            Problem.error(
                doc.path,
                doc.line((*base, "timezone")),
                f"{label}: unknown timezone {obj.timezone!r}",
            )
        )
    if obj.execution == "parallel" and obj.stop_on_error:
        problems.append(
            Problem.warning(
                doc.path,
                doc.line((*base, "stop_on_error")) or where,
                f"{label}: stop_on_error has no effect on a parallel group",
            )
        )


def _check_settings(settings: Settings, doc: Document, problems: list) -> None:
    tz = settings.scheduling.timezone
    if not valid_timezone(tz):
        line = doc.line(("scheduling", "timezone"))
        problems.append(Problem.error(doc.path, line, f"config: unknown timezone {tz!r}"))


def _check_web_tokens(settings: Settings, doc: Document, problems: list, origin: dict) -> None:
    seen: set[str] = set()
    origin["setting:web.token"] = (doc.path, doc.line(("web", "token")) or 1)
    for i, entry in enumerate(settings.web.tokens):
        line = doc.line(("web", "tokens", i))
        origin[f"web.tokens:{i}"] = (doc.path, line)
        label = f"web.tokens[{i}] '{entry.name}'"
        if entry.name in seen:
            problems.append(Problem.error(doc.path, line, f"{label}: the name is used twice"))
        seen.add(entry.name)
        if (entry.token is None) == (entry.token_file is None):
            problems.append(
                Problem.error(doc.path, line, f"{label}: give exactly one of token or token_file")
            )


def _cross_check(config: Config, problems: list[Problem]) -> None:
    used: set[str] = set()
    checks = config.settings.validation
    for group in config.groups.values():
        file, line = config.origin[f"group:{group.name}"]
        for member in group.scripts:
            used.add(member)
            if member not in config.scripts:
                at_file, at_line = config.origin.get(f"member:{group.name}:{member}", (file, line))
                problems.append(
                    Problem.error(
                        at_file, at_line, f"group '{group.name}': unknown script '{member}'"
                    )
                )
        if len(set(group.scripts)) != len(group.scripts):
            problems.append(
                Problem.warning(file, line, f"group '{group.name}': lists a script twice")
            )
        if group.depends_on:
            _check_depends_on(config, group, file, line, problems)
        if not group.scripts and checks.warn_empty_groups:
            problems.append(Problem.warning(file, line, f"group '{group.name}' has no scripts"))
    if checks.warn_unused_scripts and config.groups:
        for name in config.scripts:
            if name not in used:
                file, line = config.origin[f"script:{name}"]
                problems.append(Problem.warning(file, line, f"script '{name}' is not in any group"))


def _check_depends_on(
    config: Config, group: Group, file: Path, line: int, problems: list[Problem]
) -> None:
    """Members only, no cycles, and in a serial group every dependency listed first."""
    label = f"group '{group.name}'"
    where = config.origin.get(f"depends:{group.name}", {})
    members = set(group.scripts)
    if len(members) != len(group.scripts):
        problems.append(
            Problem.error(file, line, f"{label}: a group with depends_on lists a script twice")
        )
    for node in group.depends_on:
        at = where.get(node, line)
        for dep in [node, *group.needs(node)]:
            if dep not in members:
                problems.append(
                    Problem.error(
                        file, at, f"{label}: depends_on names '{dep}', which is not in the group"
                    )
                )
    cycle = find_cycle(group)
    if cycle:
        at = where.get(cycle[0], line)
        problems.append(Problem.error(file, at, f"{label}: dependency cycle {' -> '.join(cycle)}"))
    elif group.execution == "serial":
        order = {name: i for i, name in enumerate(group.scripts)}
        for node in group.depends_on:
            for dep in group.needs(node):
                if dep in order and node in order and order[dep] > order[node]:
                    problems.append(
                        Problem.error(
                            file,
                            where.get(node, line),
                            f"{label}: '{node}' depends on '{dep}', which is listed after it "
                            "(a serial group runs in the listed order)",
                        )
                    )


def find_cycle(group: Group) -> list[str] | None:
    """A dependency cycle of the group as ``[a, b, a]``, or None (iterative: no depth limit)."""
    done: set[str] = set()
    for root in [*group.scripts, *group.depends_on]:
        if root in done:
            continue
        path = [root]
        on_path = {root}
        stack = [iter(group.needs(root))]
        while stack:
            dep = next(stack[-1], None)
            if dep is None:
                stack.pop()
                node = path.pop()
                on_path.discard(node)
                done.add(node)
                continue
            if dep in on_path:
                return [*path[path.index(dep) :], dep]
            if dep not in done:
                path.append(dep)
                on_path.add(dep)
                stack.append(iter(group.needs(dep)))
    return None


def env_files(config: Config) -> list[tuple[str, str, Path]]:
    """(origin key, label, path) of every configured env_file."""
    out = []
    if config.settings.env_file:
        out.append(("setting:env_file", "config", config.path(config.settings.env_file)))
    for s in config.scripts.values():
        if s.env_file:
            out.append((f"script:{s.name}", f"script '{s.name}'", config.path(s.env_file)))
    return out


def read_env_file(path: Path) -> dict[str, str]:
    """Variables from a dotenv file (python-dotenv syntax)."""
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def fingerprint(config: Config) -> tuple:
    """Cheap identity of every file and directory the configuration comes from.

    Not the config directory itself: logs/ and the state directory live there.
    """
    root = config.root
    paths = {root / "config.yaml", *config.files, *(p.parent for p in config.files)}
    paths.discard(root)
    for value, default in (
        (config.settings.paths.scripts_file, "scripts.yaml"),
        (config.settings.paths.groups_file, "groups.yaml"),
    ):
        paths.update({config.path(value), root / default, (root / default).with_suffix("")})
    out: list[tuple[str, int | None, int | None, int | None]] = []
    for p in sorted(paths):
        try:
            st = os.stat(p)
            out.append((str(p), st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append((str(p), None, None, None))
    return tuple(out)


def _check_env_files(config: Config, problems: list[Problem]) -> None:
    for key, label, path in env_files(config):
        if not path.is_file():
            file, line = config.origin.get(key, (None, None))
            problems.append(Problem.error(file, line, f"{label}: env_file {path} does not exist"))


def _check_permissions(config: Config, problems: list[Problem]) -> None:
    """Refuse (as root) or warn about files others could change: they run as us.

    cron and job runners refuse such files for the same reason.
    """
    euid = os.geteuid()
    # A YAML file's directory counts too: whoever may write to scripts/ may add a script.
    dirs = sorted({f.parent for f in config.files} - {config.root})
    paths = [config.root, *dirs, *config.files, *(p for _, _, p in env_files(config))]
    make = Problem.error if euid == 0 else Problem.warning
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        if st.st_mode & 0o022:
            problems.append(
                make(
                    path,
                    None,
                    (
                        "writable by group or others, so another user could make script-monitor "
                        f"run their commands; fix with: chmod go-w {path}"
                    ),
                )
            )
        if st.st_uid != euid:
            problems.append(
                make(
                    path,
                    None,
                    (
                        f"owned by uid {st.st_uid}, not by the user running script-monitor (uid "
                        f"{euid}); fix with: chown {euid} {path}"
                    ),
                )
            )


def _check_secret_files(config: Config, problems: list[Problem]) -> None:
    """Warn about files holding secrets that other users may read (docs/SECURITY.md)."""
    web = config.settings.web
    paths = [(p, "holds secrets (env_file)") for _, _, p in env_files(config)]
    paths += [(config.path(t.token_file), "holds a web token") for t in web.tokens if t.token_file]
    literal = [t.token for t in web.tokens if t.token and "${" not in t.token]
    if (web.token and "${" not in web.token) or literal:
        paths.append((config.root / "config.yaml", "holds a web token"))
    for path, what in paths:
        try:
            mode = path.stat().st_mode
        except OSError:
            continue
        if mode & 0o004:
            problems.append(
                Problem.warning(
                    path, None, f"{what} and is readable by others; fix with: chmod o-r {path}"
                )
            )


def valid_timezone(name: str) -> bool:
    if name == "local":
        return True
    from zoneinfo import ZoneInfo

    try:
        ZoneInfo(name)
    except (ValueError, OSError, LookupError):
        return False
    return True


def cron_problem(expr: str) -> str | None:
    """Why ``expr`` is not a valid crontab(5) expression, or None when it is."""
    from .cron import parse_problem

    return parse_problem(expr)


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


# ------------------------------------------------- notifications (docs/NOTIFICATIONS.md)


def _check_notifications(
    settings: Settings, doc: Document, problems: list[Problem], origin: dict
) -> None:
    """config.yaml: default channels exist; every URL looks like one (``validate`` parses
    it with Apprise: see notify.channels.channel_problems)."""
    section = settings.notifications
    base = ("notifications",)
    if section.default.on is None:
        section.default.on = list(DEFAULT_ON)
    for name, urls in section.channels.items():
        for i, url in enumerate(urls):
            line = doc.line((*base, "channels", name, i))
            origin[f"channel:{name}:{i}"] = (doc.path, line)
            if "://" not in url:
                problems.append(
                    Problem.error(
                        doc.path, line, f"config: channel '{name}': not an Apprise URL: {url!r}"
                    )
                )
    for j, name in enumerate(section.default.channels or []):
        if name not in section.channels:
            line = doc.line((*base, "default", "channels", j))
            problems.append(Problem.error(doc.path, line, f"config: unknown channel '{name}'"))


def _check_notify_fields(
    obj: Script | Group, doc: Document, base: tuple, label: str, problems: list, origin: dict
) -> None:
    """Alert patterns compile; note where `notify.channels` is, for _check_notify_channels."""
    kind = "script" if isinstance(obj, Script) else "group"
    if isinstance(obj.notify, NotifySpec) and obj.notify.channels:
        for j, name in enumerate(obj.notify.channels):
            at = (doc.path, doc.line((*base, "notify", "channels", j)) or 1)
            origin[f"notify:{kind}:{obj.name}:{name}"] = at
    for k, alert in enumerate(getattr(obj, "alerts", [])):
        try:
            re.compile(alert.pattern)
        except (re.error, RecursionError, OverflowError) as e:
            line = doc.line((*base, "alerts", k, "pattern"))
            problems.append(
                Problem.error(
                    doc.path, line, f"{label}: invalid alert pattern {alert.pattern!r}: {e}"
                )
            )


def _check_notify_channels(config: Config, problems: list[Problem]) -> None:
    channels = config.settings.notifications.channels
    for key, where in config.origin.items():
        if key.startswith("notify:"):
            (file, line), (_, kind, name, channel) = where, key.split(":", 3)
            if channel not in channels:
                problems.append(
                    Problem.error(file, line, f"{kind} '{name}': unknown channel '{channel}'")
                )
