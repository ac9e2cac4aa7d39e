"""The typed records the repositories return: one msgspec ``Struct`` per kind of row.

Each record's fields are its table's columns in the order of ``COLUMNS``; ``from_row``
builds one from a row read with ``SELECT <COLUMNS>``, turning status text into the
``states`` enums.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from ..states import GroupStatus, LogState, MessageState, PingKind, RunStatus, SchedulerRole

_RUN_STATUS = {s.value: s for s in RunStatus}
_LOG_STATE = {s.value: s for s in LogState}
_GROUP_STATUS = {s.value: s for s in GroupStatus}


def _member(members: dict[str, Any], kind: type, text: str) -> Any:
    """The enum member of a column's text: a dict lookup costs a tenth of ``kind(text)``
    (thousands of rows per page); text no member has raises as ``kind(text)`` does."""
    found = members.get(text)
    return found if found is not None else kind(text)


class Run(msgspec.Struct, frozen=True):
    """One attempt of a script (a row of ``runs``)."""

    id: int
    script: str
    group_run_id: int | None
    group_name: str | None
    trigger: str
    status: RunStatus
    started: float
    ended: float | None
    duration: float | None
    exit_code: int | None
    signal: int | None
    pid: int | None
    owner: str
    log_path: str | None
    log_state: LogState
    detail: str | None
    attempt: int
    host: str | None
    cpu_user: float | None = None  # CPU seconds of its process tree, in user mode
    cpu_system: float | None = None  # and in the kernel
    max_rss: int | None = None  # peak resident bytes (its largest process)
    anomaly: str | None = None  # ``slow`` or ``fast`` (anomaly.Anomaly), else None

    COLUMNS: ClassVar[str] = (
        "id, script, group_run_id, group_name, trigger, status, started, ended, duration,"
        " exit_code, signal, pid, owner, log_path, log_state, detail, attempt, host,"
        " cpu_user, cpu_system, max_rss, anomaly"
    )

    @classmethod
    def from_row(cls, r: Any) -> Run:
        return cls(
            r[0], r[1], r[2], r[3], r[4], _member(_RUN_STATUS, RunStatus, r[5]), r[6], r[7],
            r[8], r[9], r[10], r[11], r[12], r[13], _member(_LOG_STATE, LogState, r[14]), r[15],
            r[16], r[17], r[18], r[19], r[20], r[21],
        )  # fmt: skip


class RunEnd(msgspec.Struct, frozen=True):
    """How a run ended, as its row records it (``Runs.finish_run``, and a worker's
    ``Claims.finish_claimed``).  ``expire`` (script, keep, before) rotates the script's
    logs in the same commit; ``usage`` is what its process tree used (CPU user and
    system seconds, peak resident bytes); ``anomaly`` its mark (``slow`` or ``fast``,
    see ``Runs.duration_band``)."""

    status: RunStatus | str
    ended: float
    duration: float
    exit_code: int | None = None
    signal: int | None = None
    pid: int | None = None
    detail: str | None = None
    log_state: LogState | str | None = None
    expire: tuple[str, int | None, float | None] | None = None
    usage: tuple[float, float, int] | None = None
    anomaly: str | None = None

    # The columns ``values`` fills, in its order (``pid`` kept when none is known).
    SET: ClassVar[str] = (
        "status = ?, ended = ?, duration = ?, exit_code = ?, signal = ?,"
        " pid = COALESCE(?, pid), detail = ?, cpu_user = ?, cpu_system = ?, max_rss = ?,"
        " anomaly = ?"
    )

    def values(self) -> tuple[Any, ...]:
        cpu_user, cpu_system, max_rss = self.usage or (None, None, None)
        anomaly = None if self.anomaly is None else str(self.anomaly)
        return (
            str(self.status), self.ended, self.duration, self.exit_code, self.signal, self.pid,
            self.detail, cpu_user, cpu_system, max_rss, anomaly,
        )  # fmt: skip

    @property
    def log_state_text(self) -> str | None:
        return None if self.log_state is None else str(self.log_state)


class GroupRun(msgspec.Struct, frozen=True):
    """One run of a group, or a scheduled tick that did not start one (``group_runs``)."""

    id: int
    group_name: str
    trigger: str
    status: GroupStatus
    started: float
    ended: float | None
    owner: str
    detail: str | None

    COLUMNS: ClassVar[str] = "id, group_name, trigger, status, started, ended, owner, detail"

    @classmethod
    def from_row(cls, r: Any) -> GroupRun:
        return cls(
            r[0], r[1], r[2], _member(_GROUP_STATUS, GroupStatus, r[3]), r[4], r[5], r[6], r[7]
        )


class NewMessage(msgspec.Struct, frozen=True):
    """A notification to record: one event of one run unit for one channel."""

    key: str
    event: str
    unit: str
    ref: str
    channel: str
    title: str
    body: str
    run_id: int | None = None
    state: str = MessageState.PENDING  # for ``record_sent``: sent | failed
    accepted: str = ""
    last_error: str | None = None


class Message(msgspec.Struct, frozen=True):
    """A recorded notification and its delivery state (``notifications``)."""

    id: int
    key: str
    event: str
    unit: str
    ref: str
    run_id: int | None
    channel: str
    title: str
    body: str
    state: MessageState
    attempts: int
    accepted: str
    created: float
    next_try: float
    sent: float | None
    last_error: str | None
    claimed_by: str | None
    claimed_until: float | None

    COLUMNS: ClassVar[str] = (
        "id, key, event, unit, ref, run_id, channel, title, body, state, attempts, accepted,"
        " created, next_try, sent, last_error, claimed_by, claimed_until"
    )

    @classmethod
    def from_row(cls, r: Any) -> Message:
        return cls(
            r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], MessageState(r[9]), r[10],
            r[11], r[12], r[13], r[14], r[15], r[16], r[17],
        )  # fmt: skip


class AlertMatch(msgspec.Struct, frozen=True):
    """A line of a run's output that matched an alert pattern (``alert_matches``)."""

    id: int
    run_id: int
    script: str
    line_number: int
    line: str
    severity: str
    pattern: str
    fail: bool
    created: float

    COLUMNS: ClassVar[str] = (
        "id, run_id, script, line_number, line, severity, pattern, fail, created"
    )

    @classmethod
    def from_row(cls, r: Any) -> AlertMatch:
        return cls(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), r[8])


class AuditRow(msgspec.Struct, frozen=True):
    """One request the web server recorded: a launch, sign-in, sign-out or wrong token."""

    id: int
    at: float
    token_name: str
    client: str
    action: str
    target: str
    result: str
    reason: str

    COLUMNS: ClassVar[str] = "id, at, token_name, client, action, target, result, reason"

    @classmethod
    def from_row(cls, r: Any) -> AuditRow:
        return cls(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7])


class WatchEvent(msgspec.Struct, frozen=True):
    """A finding the watchdog recorded once: missed ticks, an overdue run, a silent
    scheduler (``watch_events``)."""

    key: str
    kind: str
    subject: str
    detail: str | None
    created: float

    COLUMNS: ClassVar[str] = "key, kind, subject, detail, created"

    @classmethod
    def from_row(cls, r: Any) -> WatchEvent:
        return cls(r[0], r[1], r[2], r[3], r[4])


class RunSummary(msgspec.Struct, frozen=True):
    """The few fields of a run the dashboard's sparklines need."""

    id: int
    status: RunStatus
    started: float
    duration: float | None


class PruneReport(msgspec.Struct):
    """What ``history prune`` deleted (or would delete, with ``dry_run``)."""

    cutoff: float | None
    runs: int = 0
    group_runs: int = 0
    messages: int = 0
    alerts: int = 0
    watch_events: int = 0
    audit: int = 0  # rows of the web server's audit trail
    pings: int = 0  # pings of passive checks
    logs: int = 0  # log files removed from disk


class CheckState(msgspec.Struct, frozen=True):
    """Where a passive check stands in the history (``check_state``)."""

    name: str
    first_seen: float  # when a ping or the watchdog first saw it
    last_ping: float | None
    last_kind: PingKind | None
    last_run_id: int | None  # its newest run
    open_run_id: int | None  # the run a start opened and no end closed yet
    pings: int

    COLUMNS: ClassVar[str] = (
        "name, first_seen, last_ping, last_kind, last_run_id, open_run_id, pings"
    )

    @classmethod
    def from_row(cls, r: Any) -> CheckState:
        kind = PingKind(r[3]) if r[3] is not None else None
        return cls(r[0], r[1], r[2], kind, r[4], r[5], r[6])


class NewPing(msgspec.Struct, frozen=True):
    """A ping to record: a job reporting its start, its success, a failure or its exit code."""

    check: str
    kind: PingKind
    at: float
    client: str
    exit_code: int | None = None
    body: bytes = b""  # its last 10 kB: the run's log


class Ping(msgspec.Struct, frozen=True):
    """A ping as recorded (``check_pings``)."""

    id: int
    check: str
    at: float
    kind: PingKind
    exit_code: int | None
    client: str
    run_id: int | None
    body_size: int

    COLUMNS: ClassVar[str] = "id, check_name, at, kind, exit_code, client, run_id, body_size"

    @classmethod
    def from_row(cls, r: Any) -> Ping:
        return cls(r[0], r[1], r[2], PingKind(r[3]), r[4], r[5], r[6], r[7])


class PingResult(msgspec.Struct, frozen=True):
    """What recording a ping did: the run it opened or ended, and that run's status."""

    ping_id: int
    run_id: int
    status: RunStatus
    superseded: int | None = None  # an older start's run, ended lost by this start


class SchedulerMember(msgspec.Struct, frozen=True):
    """A scheduler sharing the store (a row of ``schedulers``), and its role now."""

    owner: str
    host: str
    pid: int
    config_dir: str
    version: str
    started: float
    beat: float
    role: SchedulerRole
    age: float  # seconds since its last beat, by the store's clock
