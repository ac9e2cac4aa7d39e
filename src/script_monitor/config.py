"""Configuration: schema, loading from files or directories, cross-checks.

This is the only module that reads the user's YAML. It never writes it.
Every problem is reported with the file and line it comes from.
"""

import contextlib
import operator
import os
import re
import time
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec
import yaml

from .errors import ConfigError, Problem, UnknownName
from .states import FAILURES, RunStatus

NAME_PATTERN = r"^(?!\.{1,2}$)[A-Za-z0-9_.-]{1,128}$"
Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
Seconds = Annotated[float, msgspec.Meta(ge=0)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
EnvValue = str | int | float | bool
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
EnvName = Annotated[str, msgspec.Meta(pattern=ENV_NAME_PATTERN)]
KEY_PATTERN = r"^[A-Za-z0-9_-]{16,128}$"  # a check's key: a secret that goes in a URL
CHECKS_FILE = "checks.yaml"  # beside scripts.yaml and groups.yaml (or a checks/ folder)


class _Strict(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


# Notifications and output alerts (docs/NOTIFICATIONS.md); checked at the end of this file.
Event = Literal["failure", "recovery", "success", "output", "missed", "overdue", "anomaly"]
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

# Monitoring (docs/MONITORING.md): unusual durations and resource limits.
Slow = Annotated[float, msgspec.Meta(gt=1)]
Fast = Annotated[float, msgspec.Meta(ge=0, lt=1)]


class AnomalyRule(_Strict):
    """When a successful run's duration is unusual: the global ``anomaly`` (and the
    effective rule of a script, ``Config.anomaly_for``)."""

    enabled: bool = True
    min_runs: Positive = 10  # successful runs needed before any run is judged
    window: Positive = 50  # the median is taken over this many newest successful runs
    slow: Slow = 3.0  # slower than slow × the median: ``slow`` (and the learned overdue)
    fast: Fast = 0.2  # quicker than fast × the median: ``fast``


class AnomalySpec(_Strict):
    """A script's ``anomaly``: each key given replaces the global one's."""

    enabled: bool | None = None
    min_runs: Positive | None = None
    window: Positive | None = None
    slow: Slow | None = None
    fast: Fast | None = None


Size = Annotated[int, msgspec.Meta(ge=1)] | Annotated[str, msgspec.Meta(min_length=1)]
_SIZE = r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$"  # compiled when a limit is read


def parse_size(value: int | str) -> int | None:
    """Bytes from ``100M``, ``2G``, ``512k``, ``1.5GiB`` or a plain number of bytes
    (units are powers of 1024); None when it is not a size."""
    if isinstance(value, int):
        return value if value > 0 else None
    m = re.match(_SIZE, value, re.I)
    if m is None:
        return None
    size = int(float(m.group(1)) * 1024 ** "_kmgt".index((m.group(2) or "_").lower()))
    return size if size > 0 else None


class Limits(_Strict):
    """A script's resource limits: a run over one is ended and ``failed``."""

    max_rss: Size | None = None  # resident memory of its process tree
    max_cpu: Annotated[float, msgspec.Meta(gt=0)] | None = None  # CPU seconds of its tree


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
    anomaly: AnomalySpec | None = None
    limits: Limits | None = None


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


class Check(_Strict):
    """A passive check (checks.yaml): a job script-monitor does not run reports in by
    pings (docs/MONITORING.md)."""

    name: Name
    schedule: str | None = None  # cron: when a ping is due
    period: Annotated[float, msgspec.Meta(gt=0)] | None = None  # or: seconds between pings
    grace: Seconds | None = None  # how late a ping may be; default scheduling.missed_grace
    timezone: str | None = None  # the schedule's; default scheduling.timezone
    description: str = ""
    key: Annotated[str, msgspec.Meta(pattern=KEY_PATTERN)] | None = None
    notify: NotifySpec | bool | None = None


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


class Retention(_Strict):
    """How long finished runs stay in the history (docs/HISTORY.md)."""

    days: Annotated[float, msgspec.Meta(ge=0)] = 90  # 0 keeps everything
    keep_last: Annotated[int, msgspec.Meta(ge=0)] = 100  # per script and group, however old


class HistorySettings(_Strict):
    """The history's upkeep (docs/CONFIG.md)."""

    # {days, keep_last}; a bare number is the days
    retention: Annotated[float, msgspec.Meta(ge=0)] | Retention = msgspec.field(
        default_factory=Retention
    )

    @property
    def rule(self) -> Retention:
        """The retention rule, whichever way it was written."""
        if isinstance(self.retention, Retention):
            return self.retention
        return Retention(days=self.retention)


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
    anomaly: AnomalyRule = msgspec.field(default_factory=AnomalyRule)


class Config(msgspec.Struct):
    """The loaded, validated configuration of one config directory."""

    root: Path
    settings: Settings
    scripts: dict[str, Script]
    groups: dict[str, Group]
    files: list[Path] = msgspec.field(default_factory=list)
    checks: dict[str, Check] = msgspec.field(default_factory=dict)
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

    def anomaly_for(self, script: Script) -> AnomalyRule:
        """The script's ``anomaly`` over the global one, key by key."""
        base, own = self.settings.anomaly, script.anomaly
        if own is None:
            return base
        return AnomalyRule(
            **{
                f: getattr(base, f) if getattr(own, f) is None else getattr(own, f)
                for f in AnomalyRule.__struct_fields__
            }
        )

    def limits_for(self, script: Script) -> tuple[int | None, float | None]:
        """(max_rss in bytes, max_cpu in seconds) of the script; None where unset."""
        limits = script.limits
        if limits is None:
            return None, None
        rss = parse_size(limits.max_rss) if limits.max_rss is not None else None
        return rss, limits.max_cpu

    def zone_of(self, group: Group | Check) -> str:
        """The time zone a group's (or a check's) schedule is read in."""
        return group.timezone or self.settings.scheduling.timezone

    def grace_of(self, check: Check) -> float:
        """How late a check's ping may be (``scheduling.missed_grace`` by default)."""
        return self.settings.scheduling.missed_grace if check.grace is None else check.grace

    def has_runs(self, name: str) -> None:
        """UnknownName unless ``name`` is a script or a check (both have runs)."""
        if name not in self.checks:
            try:
                self.script(name)
            except UnknownName as e:
                close = [c for c in e.suggestions]
                if not close:
                    import difflib

                    close = difflib.get_close_matches(name, list(self.checks), n=3, cutoff=0.6)
                if close or not self.checks:
                    raise
                raise UnknownName("script or check", name, self.checks) from None

    def check(self, name: str) -> Check:
        try:
            return self.checks[name]
        except KeyError:
            raise UnknownName("check", name, self.checks) from None

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
    cache = ItemCache((root / os.path.expanduser(paths.state_dir)).resolve())
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


# ---------------------------------------------- the parsed scripts and groups, kept


class _Kept(msgspec.Struct, array_like=True):
    """One scripts/groups file as it was last loaded without error."""

    stamp: list[int]  # the file's and this module's size, mtime, inode, ctime
    items: msgspec.Raw  # list[Script] or list[Group], as converted and checked
    origin: list[tuple[str, Any]]  # (key, line) or (key, {node: line}) within the file
    warnings: list[tuple[int | None, str]]


RACY_NS = 2_000_000_000  # a file changed this recently is read again next time


class ItemCache:
    """The converted items of each scripts/groups file, kept in the state folder
    (``config-cache.msgpack``, mode 0600) and used again while the file and this module
    are unchanged: parsing YAML is most of the start-up of a command on a configuration
    of thousands of scripts. Anything unusual (no state folder, a damaged or foreign
    file, a duplicate name across files) falls back to reading the YAML."""

    FILE = "config-cache.msgpack"

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / self.FILE
        self.kept: dict[str, _Kept] = {}
        self.fresh: dict[str, _Kept] = {}
        try:
            code = os.stat(__file__)
            self.code = [code.st_size, code.st_mtime_ns]
            self.kept = msgspec.msgpack.decode(self.path.read_bytes(), type=dict[str, _Kept])
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            self.kept = {}

    def _stamp(self, file: Path) -> list[int] | None:
        try:
            st = os.stat(file)
        except OSError:
            return None
        return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, *self.code]

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
        stamp = self._stamp(file)
        kept = self.kept.get(str(file))
        if stamp is not None and kept is not None and kept.stamp == stamp:
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
        if stamp is None or any(p.level == "error" for p in added):
            return
        if time.time_ns() - stamp[1] < RACY_NS:
            return  # changed just now: a change in the same clock tick would look the same
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


def _check_item(
    obj: Script | Group, doc: Document, base: tuple, label: str, problems: list
) -> None:
    if isinstance(obj, Script):
        if isinstance(obj.command, list) and any(not a for a in obj.command[:1]):
            problems.append(
                Problem.error(doc.path, doc.line((*base, "command")), f"{label}: empty program")
            )
        limits = obj.limits
        if limits is not None and limits.max_rss is not None and parse_size(limits.max_rss) is None:
            problems.append(
                Problem.error(
                    doc.path,
                    doc.line((*base, "limits", "max_rss")),
                    f"{label}: key 'limits.max_rss': not a size: {limits.max_rss!r}"
                    " (a number of bytes, or with a unit: 512K, 100M, 2G, 1T)",
                )
            )
        if obj.anomaly is not None:
            _check_anomaly(obj.anomaly, doc, (*base, "anomaly"), label, problems)
        return
    where = doc.line(base)
    _check_when(obj, doc, base, label, problems)
    if obj.execution == "parallel" and obj.stop_on_error:
        problems.append(
            Problem.warning(
                doc.path,
                doc.line((*base, "stop_on_error")) or where,
                f"{label}: stop_on_error has no effect on a parallel group",
            )
        )


def _check_when(
    obj: Group | Check, doc: Document, base: tuple, label: str, problems: list[Problem]
) -> None:
    """A group's or a check's cron expression and time zone are valid."""
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


def _check_check_fields(
    obj: Check, doc: Document, base: tuple, label: str, problems: list[Problem]
) -> None:
    """A check has exactly one of schedule and period; its cron and time zone are valid."""
    if (obj.schedule is None) == (obj.period is None):
        problems.append(
            Problem.error(
                doc.path, doc.line(base), f"{label}: give exactly one of schedule or period"
            )
        )
    _check_when(obj, doc, base, label, problems)


def _check_anomaly(
    rule: AnomalyRule | AnomalySpec, doc: Document, base: tuple, label: str, problems: list
) -> None:
    """``fast`` below ``slow``; a ``window`` that can hold ``min_runs`` runs.  Only the keys
    given here are compared (a script's others come from the global rule)."""
    if rule.fast is not None and rule.slow is not None and rule.fast >= rule.slow:
        problems.append(
            Problem.error(
                doc.path,
                doc.line((*base, "fast")),
                f"{label}: key 'anomaly.fast' ({rule.fast:g}) must be below anomaly.slow"
                f" ({rule.slow:g})",
            )
        )
    if rule.window is not None and rule.min_runs is not None and rule.window < rule.min_runs:
        problems.append(
            Problem.error(
                doc.path,
                doc.line((*base, "window")),
                f"{label}: key 'anomaly.window' ({rule.window}) must be at least"
                f" anomaly.min_runs ({rule.min_runs}): no run would ever be judged",
            )
        )


def _check_checks(config: Config, problems: list[Problem]) -> None:
    """Checks share the scripts' namespace (a ping names one), and no key is a name."""
    names = set(config.checks)
    keys: dict[str, str] = {}
    for check in config.checks.values():
        file, line = config.origin[f"check:{check.name}"]
        for kind, taken in (("script", config.scripts), ("group", config.groups)):
            if check.name in taken:
                at_file, at_line = config.origin[f"{kind}:{check.name}"]
                problems.append(
                    Problem.error(
                        file,
                        line,
                        f"check '{check.name}': the name is taken by a {kind} (defined in"
                        f" {at_file.name}:{at_line}); checks share the scripts' names",
                    )
                )
        if check.key is None:
            continue
        if check.key in names or check.key in keys:
            other = check.key if check.key in names else keys[check.key]
            problems.append(
                Problem.error(
                    file,
                    line,
                    f"check '{check.name}': its key is the"
                    f" {'name' if check.key in names else 'key'} of check '{other}'",
                )
            )
        keys[check.key] = check.name


def _check_settings(settings: Settings, doc: Document, problems: list) -> None:
    _check_anomaly(settings.anomaly, doc, ("anomaly",), "config", problems)
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


def _check_effective_anomaly(config: Config, problems: list[Problem]) -> None:
    """A script's ``anomaly`` over the global one: the pairs its own keys do not settle
    alone (``_check_anomaly`` told those)."""
    for script in config.scripts.values():
        own = script.anomaly
        if own is None:
            continue
        rule = config.anomaly_for(script)
        file, line = config.origin[f"script:{script.name}"]
        label = f"script '{script.name}'"
        if rule.fast >= rule.slow and (own.fast is None or own.slow is None):
            problems.append(
                Problem.error(
                    file,
                    line,
                    f"{label}: anomaly.fast ({rule.fast:g}) must be below anomaly.slow"
                    f" ({rule.slow:g}; one of them from config.yaml)",
                )
            )
        if rule.window < rule.min_runs and (own.window is None or own.min_runs is None):
            problems.append(
                Problem.error(
                    file,
                    line,
                    f"{label}: anomaly.window ({rule.window}) must be at least anomaly.min_runs"
                    f" ({rule.min_runs}; one of them from config.yaml): no run would ever be"
                    " judged",
                )
            )


def _cross_check(config: Config, problems: list[Problem]) -> None:
    _check_effective_anomaly(config, problems)
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
        (CHECKS_FILE, CHECKS_FILE),
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
    keyed = {config.origin[f"check:{c.name}"][0] for c in config.checks.values() if c.key}
    paths += [(file, "holds check keys") for file in sorted(keyed)]
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
    obj: Script | Group | Check,
    doc: Document,
    base: tuple,
    label: str,
    problems: list,
    origin: dict,
) -> None:
    """Alert patterns compile; note where `notify.channels` is, for _check_notify_channels."""
    kind = {Script: "script", Group: "group"}.get(type(obj), "check")
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
