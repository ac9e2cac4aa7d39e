"""The configuration's schema: every key of config.yaml, scripts.yaml, groups.yaml and
checks.yaml as msgspec Structs, and ``Config``, the loaded configuration."""

import functools
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import msgspec

from ..errors import Problem, UnknownName
from ..states import FAILURES, RunStatus

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


@functools.lru_cache(maxsize=256)
def _resolved(root: Path, value: str, home: str | None) -> Path:
    return (root / os.path.expanduser(value)).resolve()


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
    master_name: str | None = None  # the Redis master a sentinel:// broker URL asks for


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
        """Resolve a configured path relative to the config directory (once per process:
        a worker asks for its log folder with every run)."""
        return _resolved(self.root, value, os.environ.get("HOME"))

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
