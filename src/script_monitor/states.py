"""The named states of runs and their logs, stored as text in the history.

``StrEnum`` members are ``str``: they go into SQLite and JSON as their plain value
and compare equal to it, so rows read back as plain strings still match.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """What became of a run (docs/CONTRACT.md)."""

    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    TIMEOUT = "timeout"
    SKIPPED = "skipped"
    INTERRUPTED = "interrupted"
    LOST = "lost"

    @property
    def failed(self) -> bool:
        """A failure that counts against the group: failed, timed out or lost."""
        return self in FAILURES


FAILURES = frozenset({RunStatus.FAILED, RunStatus.TIMEOUT, RunStatus.LOST})


class GroupStatus(StrEnum):
    """What became of a group run, or of a scheduled tick that did not start one."""

    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    LOST = "lost"
    SKIPPED = "skipped"  # the tick's overlap policy did not start it
    MISSED = "missed"  # the tick was not fired in time (catchup)


class TickOutcome(StrEnum):
    """How a scheduler handled a due tick (each tick once, whichever scheduler leads)."""

    FIRED = "fired"  # a group run was started for it
    SKIPPED = "skipped"  # its overlap policy did not start it
    MISSED = "missed"  # it was not fired in time (catchup)


class SchedulerRole(StrEnum):
    """A scheduler sharing a store: the one that fires ticks, or one waiting to."""

    LEADER = "leader"
    STANDBY = "standby"


class MessageState(StrEnum):
    """Where a notification is in the outbox."""

    PENDING = "pending"  # waiting for its (next) delivery attempt
    SENT = "sent"
    FAILED = "failed"  # every attempt failed; no more tries


class LogState(StrEnum):
    """Whether a run's log file is there."""

    NONE = "none"  # not yet written (a running or skipped run)
    OK = "ok"
    ROTATED = "rotated"
    CLEARED = "cleared"
    ERROR = "error"  # could not be written


class AuditAction(StrEnum):
    """What a request to the web server tried to do (the audit trail)."""

    LAUNCH = "launch"
    LOGIN = "login"
    LOGOUT = "logout"
    AUTH = "auth"  # a request with a wrong bearer token


class AuditResult(StrEnum):
    ACCEPTED = "accepted"
    REFUSED = "refused"


class Refusal(StrEnum):
    """Why a request was refused (the audit trail's reason, a /metrics label)."""

    BAD_TOKEN = "bad_token"
    THROTTLED = "throttled"
    ROLE = "role"
    OVERLAP = "overlap"
    LAUNCH_CAP = "launch_cap"
    UNKNOWN = "unknown_target"
    CSRF = "csrf"  # a form or header without the session's CSRF token
    CROSS_SITE = "cross_site"  # Origin or Sec-Fetch-Site says another site
    NO_TOKEN = "no_token"  # a launch or sign-out without any token


class CheckStatus(StrEnum):
    """Where a passive check stands (docs/MONITORING.md): worked out from its pings,
    its schedule or period and the time, never stored."""

    NEW = "new"  # no ping yet, and not yet due
    UP = "up"  # the last ping was a success, and the next is not late
    STARTED = "started"  # a start without its end, within grace
    DOWN = "down"  # the last ping reported a failure
    LATE = "late"  # no ping within grace of its due time, or a start without an end


class PingKind(StrEnum):
    """What a ping reports."""

    START = "start"
    SUCCESS = "success"
    FAIL = "fail"
    EXIT = "exit"  # an exit code: 0 is a success, anything else a failure
