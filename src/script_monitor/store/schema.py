"""The history's schema: one list of migrations for both backends.

Each entry migrates the schema from version i to i + 1.  Column types are written
as ``{int}``, ``{real}``, ``{blob}``, ``{pk}`` and ``{no_rowid}`` and filled in from
``Dialect.types``; everything else is SQL that SQLite and PostgreSQL both accept.
Status literals in partial indexes are the values of ``states.RunStatus`` and
``states.GroupStatus``.
"""

from __future__ import annotations

from .dialect import Dialect

MIGRATIONS = [
    """
    CREATE TABLE IF NOT EXISTS group_runs (
        id {pk},
        group_name TEXT NOT NULL,
        trigger TEXT NOT NULL,
        status TEXT NOT NULL,
        started {real} NOT NULL,
        ended {real},
        owner TEXT NOT NULL,
        detail TEXT
    );
    CREATE INDEX IF NOT EXISTS group_runs_name ON group_runs (group_name, id);
    CREATE TABLE IF NOT EXISTS runs (
        id {pk},
        script TEXT NOT NULL,
        group_run_id {int} REFERENCES group_runs (id),
        group_name TEXT,
        trigger TEXT NOT NULL,
        status TEXT NOT NULL,
        started {real} NOT NULL,
        ended {real},
        duration {real},
        exit_code {int},
        signal {int},
        pid {int},
        owner TEXT NOT NULL,
        log_path TEXT,
        log_state TEXT NOT NULL DEFAULT 'none',
        detail TEXT
    );
    CREATE INDEX IF NOT EXISTS runs_script ON runs (script, id);
    CREATE INDEX IF NOT EXISTS runs_status ON runs (status) WHERE status = 'running';
    CREATE INDEX IF NOT EXISTS runs_group ON runs (group_run_id);
    """,
    # Rotation looks for a script's runs that still have a log: only these, not its
    # whole history (a run a minute is half a million rows a year).
    """
    CREATE INDEX IF NOT EXISTS runs_logs ON runs (script, id) WHERE log_state = 'ok';
    """,
    # Retries: every attempt is its own row.  The host that ran it (a worker's name
    # for distributed runs; the machine's hostname for local runs).
    """
    ALTER TABLE runs ADD COLUMN attempt {int} NOT NULL DEFAULT 1;
    ALTER TABLE runs ADD COLUMN host TEXT;
    """,
    # Distributed execution: a worker claims a run by setting its first heartbeat, and
    # beats while it runs; cancel asks its worker to end it; a remote run's output
    # reaches the history in chunks (logs from any host).
    """
    ALTER TABLE runs ADD COLUMN heartbeat {real};
    ALTER TABLE runs ADD COLUMN cancel {int} NOT NULL DEFAULT 0;
    CREATE TABLE IF NOT EXISTS run_logs (
        run_id {int} NOT NULL,
        seq {int} NOT NULL,
        data {blob} NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    """,
    # Notifications, output alerts and the watchdog (docs/NOTIFICATIONS.md).
    # `notifications.key` (event, unit run, channel) is unique, so the same event of
    # the same run is recorded, and so sent, once.  Few pages: a new history must fit
    # on a small disk (tests/test_faults.py).
    """
    CREATE TABLE IF NOT EXISTS notifications (
        id {pk},
        key TEXT NOT NULL UNIQUE,
        event TEXT NOT NULL,
        unit TEXT NOT NULL,
        ref TEXT NOT NULL,
        run_id {int},
        channel TEXT NOT NULL,
        title TEXT NOT NULL,
        body TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts {int} NOT NULL DEFAULT 0,
        accepted TEXT NOT NULL DEFAULT '',
        created {real} NOT NULL,
        next_try {real} NOT NULL,
        sent {real},
        last_error TEXT,
        claimed_by TEXT,
        claimed_until {real}
    );
    CREATE INDEX IF NOT EXISTS notifications_unit ON notifications (unit, id);
    CREATE TABLE IF NOT EXISTS alert_matches (
        id {pk},
        run_id {int} NOT NULL,
        script TEXT NOT NULL,
        line_number {int} NOT NULL,
        line TEXT NOT NULL,
        severity TEXT NOT NULL,
        pattern TEXT NOT NULL,
        fail {int} NOT NULL DEFAULT 0,
        created {real} NOT NULL
    );
    CREATE INDEX IF NOT EXISTS alert_matches_run ON alert_matches (run_id);
    CREATE TABLE IF NOT EXISTS alert_overflow (
        run_id {int} PRIMARY KEY,
        dropped {int} NOT NULL
    );
    CREATE TABLE IF NOT EXISTS watch_positions (
        group_name TEXT PRIMARY KEY,
        schedule TEXT NOT NULL,
        position {real} NOT NULL
    ){no_rowid};
    CREATE TABLE IF NOT EXISTS watch_events (
        key TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        detail TEXT,
        created {real} NOT NULL
    ){no_rowid};
    CREATE INDEX IF NOT EXISTS group_runs_running ON group_runs (status)
        WHERE status = 'running';
    CREATE INDEX IF NOT EXISTS group_runs_scheduled ON group_runs (group_name, started)
        WHERE trigger = 'schedule';
    """,
    # Scale and retention: the totals of every finished run up to a run id (run_totals,
    # one row per script and status, rolled forward before old runs are pruned, so
    # /metrics neither rescans ten million rows nor goes down); the newest ended group
    # run of each group (of all, and of scheduled ones: `status` asks every group, and a
    # group never scheduled would otherwise be read to its first run) and the outbox's
    # pending messages are found without a scan;
    # old rows of the other tables are found by time.
    """
    CREATE TABLE IF NOT EXISTS run_totals (
        script TEXT NOT NULL,
        status TEXT NOT NULL,
        runs {int} NOT NULL,
        max_started {real},
        max_ended {real},
        max_id {int},
        duration_sum {real} NOT NULL,
        duration_count {int} NOT NULL,
        buckets TEXT NOT NULL,
        PRIMARY KEY (script, status)
    ){no_rowid};
    CREATE TABLE IF NOT EXISTS run_totals_upto (
        upto {int} NOT NULL
    );
    CREATE INDEX IF NOT EXISTS notifications_pending ON notifications (next_try)
        WHERE state = 'pending';
    CREATE INDEX IF NOT EXISTS notifications_created ON notifications (created);
    CREATE INDEX IF NOT EXISTS alert_matches_script ON alert_matches (script, id);
    CREATE INDEX IF NOT EXISTS watch_events_created ON watch_events (created);
    CREATE INDEX IF NOT EXISTS group_runs_ended ON group_runs (group_name, id)
        WHERE status NOT IN ('running', 'skipped', 'missed');
    CREATE INDEX IF NOT EXISTS group_runs_scheduled_ended ON group_runs (group_name, id)
        WHERE trigger = 'schedule' AND status NOT IN ('running', 'skipped', 'missed');
    """,
    # The web server's audit trail and the sessions ended by signing out (docs/SECURITY.md);
    # the refusals of pruned audit rows, kept as totals by reason for /metrics.
    """
    CREATE TABLE IF NOT EXISTS audit (
        id {pk},
        at {real} NOT NULL,
        token_name TEXT NOT NULL,
        client TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        result TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
    CREATE TABLE IF NOT EXISTS revoked_sessions (
        sid TEXT PRIMARY KEY,
        expires {real} NOT NULL
    ){no_rowid};
    CREATE TABLE IF NOT EXISTS audit_refusals (
        reason TEXT PRIMARY KEY,
        refused {int} NOT NULL
    ){no_rowid};
    """,
    # Monitoring (docs/MONITORING.md): what a run's process tree used (CPU seconds, peak
    # resident bytes) and whether its duration left the script's usual band; the
    # successful durations of a script, newest first, read from the index alone (the
    # band is taken once per finished run); the anomalies by script and kind kept as
    # totals below run_totals_upto, as the other totals are.
    """
    ALTER TABLE runs ADD COLUMN cpu_user {real};
    ALTER TABLE runs ADD COLUMN cpu_system {real};
    ALTER TABLE runs ADD COLUMN max_rss {int};
    ALTER TABLE runs ADD COLUMN anomaly TEXT;
    ALTER TABLE run_totals ADD COLUMN usage TEXT;
    CREATE INDEX IF NOT EXISTS runs_success ON runs (script, id, duration)
        WHERE status = 'success';
    """,
    # Passive checks (docs/MONITORING.md): a check's runs are rows of `runs` with trigger
    # `ping` (a start opens one, its end closes it; a body is the run's log, in
    # run_logs); every ping received is a row of check_pings; check_state holds where
    # each check stands: its newest ping and the run a start left open.
    """
    CREATE TABLE IF NOT EXISTS check_state (
        name TEXT PRIMARY KEY,
        first_seen {real} NOT NULL,
        last_ping {real},
        last_kind TEXT,
        last_run_id {int},
        open_run_id {int},
        pings {int} NOT NULL DEFAULT 0
    ){no_rowid};
    CREATE TABLE IF NOT EXISTS check_pings (
        id {pk},
        check_name TEXT NOT NULL,
        at {real} NOT NULL,
        kind TEXT NOT NULL,
        exit_code {int},
        client TEXT NOT NULL,
        run_id {int},
        body_size {int} NOT NULL DEFAULT 0
    );
    CREATE INDEX IF NOT EXISTS check_pings_name ON check_pings (check_name, id);
    CREATE INDEX IF NOT EXISTS check_pings_at ON check_pings (at);
    """,
    # Several schedulers on one store (docs/DISTRIBUTED.md): the leader holds the lease
    # row `scheduler` of `leases` (renewed, taken over once expired); every scheduler
    # beats in `schedulers` (status shows the leader and the standbys); a due tick is
    # handled through its unique (group, due) row of `ticks`, so it fires once even
    # while the lead changes hands.  A group run's orchestrator holds a lease on it.
    """
    CREATE TABLE IF NOT EXISTS leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires {real} NOT NULL,
        acquired {real} NOT NULL
    ){no_rowid};
    CREATE TABLE IF NOT EXISTS schedulers (
        owner TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid {int} NOT NULL,
        config_dir TEXT NOT NULL,
        version TEXT NOT NULL,
        started {real} NOT NULL,
        beat {real} NOT NULL
    ){no_rowid};
    CREATE TABLE IF NOT EXISTS ticks (
        group_name TEXT NOT NULL,
        due {real} NOT NULL,
        outcome TEXT NOT NULL,
        scheduler TEXT NOT NULL,
        handled {real} NOT NULL,
        PRIMARY KEY (group_name, due)
    ){no_rowid};
    CREATE INDEX IF NOT EXISTS ticks_handled ON ticks (handled);
    ALTER TABLE group_runs ADD COLUMN lease_holder TEXT;
    ALTER TABLE group_runs ADD COLUMN lease_until {real};
    """,
]

VERSION = len(MIGRATIONS)


def statements(dialect: Dialect, since: int) -> list[str]:
    """The DDL statements that bring a schema of version ``since`` up to ``VERSION``."""
    out = []
    for step in MIGRATIONS[since:]:
        for statement in step.format(**dialect.types).split(";"):
            if statement.strip():
                out.append(statement)
    return out
