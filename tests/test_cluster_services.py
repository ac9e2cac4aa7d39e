"""Service blips under a distributed group run (docs/DISTRIBUTED.md): a PostgreSQL of the
test's own restarted mid-group or stopped for longer than ``store.retry_for``, a Redis of
the test's own restarted without persistence.

The machine's shared services are never touched: the restarted one is a private
instance (``pg_ctl`` on a temp dir, ``redis-server`` on a free port); the other is the
shared one, with a queue of the test's own.  Real workers, the real CLI; executions
counted with marker files.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import empty_pg
from helpers import MAIN, free_port, make_config, need_server, sm, until
from test_store_errors import private_pg  # noqa: F401 (a fixture)

pytestmark = pytest.mark.fault


def _marked(marks: Path, n: int) -> str:
    return (
        f'echo "start $SCRIPT_MONITOR_RUN_ID" >> {marks}/{n}; sleep 1;'
        f' echo "done $SCRIPT_MONITOR_RUN_ID" >> {marks}/{n}'
    )


def _setup(tmp_path: Path, settings: dict, count: int, cap: int) -> tuple[Path, Path, list]:
    marks = tmp_path / "marks"
    marks.mkdir()
    names = [f"s{i}" for i in range(count)]
    conf = make_config(
        tmp_path / "c",
        {n: _marked(marks, n) for n in names},
        [{"name": "g", "execution": "parallel", "max_parallel_workers": cap, "scripts": names}],
        settings,
    )
    return conf, marks, names


def _worker(conf: Path, name: str, concurrency: int) -> subprocess.Popen:
    log = conf / f"worker-{name}.log"
    with open(log, "w") as out:
        p = subprocess.Popen(
            [
                *(sys.executable, str(MAIN), "--config-dir", str(conf), "worker"),
                *("--hostname", f"{name}@test", "--concurrency", str(concurrency)),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    until(lambda: "ready" in log.read_text() or p.poll() is not None, timeout=30)
    assert p.poll() is None, log.read_text()
    return p


def _starts(marks: Path, name: str) -> list[str]:
    path = marks / name
    return (
        [x for x in path.read_text().split("\n") if x.startswith("start")] if path.exists() else []
    )


def test_a_postgresql_restarted_mid_group_is_ridden_out(tmp_path, private_pg, redis_url):  # noqa: F811
    conf, marks, names = _setup(
        tmp_path,
        {
            "store": {"url": private_pg.url},
            "execution": {"backend": "celery", "lost_after": 30},
            "celery": {"broker_url": redis_url, "queue": f"smtest-{uuid.uuid4().hex[:10]}"},
        },
        6,
        3,
    )
    assert sm(conf, "store", "migrate").returncode == 0
    worker = _worker(conf, "w1", 3)
    try:
        caller = subprocess.Popen(
            [sys.executable, str(MAIN), "--config-dir", str(conf), "run-group", "g"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        until(lambda: len(list(marks.iterdir())) >= 2, timeout=30)
        private_pg.stop()  # mid-group: runs going, others waiting for a worker
        time.sleep(3)
        private_pg.start()
        out, err = caller.communicate(timeout=120)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(60)
    assert caller.returncode == 0, out + err
    for name in names:  # executed once and recorded once
        assert len(_starts(marks, name)) == 1, name
        runs = json.loads(sm(conf, "history", name, "--json").stdout)
        assert [r["status"] for r in runs] == ["success"], runs
    groups = json.loads(sm(conf, "list-groups", "--json").stdout)
    assert groups[0]["last_run"]["status"] == "success"
    assert "Traceback" not in err + (conf / "worker-w1.log").read_text()


def _scheduler(conf: Path) -> subprocess.Popen:
    log = conf / "scheduler.log"
    with open(log, "w") as out:
        p = subprocess.Popen(
            [sys.executable, str(MAIN), "--config-dir", str(conf), "scheduler"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    until(lambda: "started for" in log.read_text() or p.poll() is not None, timeout=30)
    assert p.poll() is None, log.read_text()
    return p


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_postgresql_down_longer_than_retry_for_leaves_nothing_hanging(
    tmp_path,
    private_pg,  # noqa: F811
    redis_url,
):
    """PostgreSQL stopped mid-group for longer than ``store.retry_for``: 20 s of retrying
    here and 30 s down (the default is 60 s; the shape, down longer than retry_for, is
    what counts).  The caller gives up with exit 2 and a message naming the store; the
    worker and the scheduler ride it out; once PostgreSQL is back the scheduler carries
    the group run on, every run ends with a status and a reason, none runs twice, and a
    new group run succeeds."""
    retry_for, down = 20, 30
    conf, marks, names = _setup(
        tmp_path,
        {
            "store": {"url": private_pg.url, "retry_for": retry_for},
            "execution": {"backend": "celery", "lost_after": 10},
            "celery": {"broker_url": redis_url, "queue": f"smtest-{uuid.uuid4().hex[:10]}"},
            "scheduling": {"lease_ttl": 3},
        },
        6,
        2,
    )
    assert sm(conf, "store", "migrate").returncode == 0
    worker = _worker(conf, "w1", 2)
    scheduler = _scheduler(conf)
    try:
        caller = subprocess.Popen(
            [sys.executable, str(MAIN), "--config-dir", str(conf), "run-group", "g"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        until(lambda: len(list(marks.iterdir())) >= 2, timeout=30)
        private_pg.stop()  # two runs going, four waiting for their turn
        stopped = time.monotonic()
        out, err = caller.communicate(timeout=retry_for + 30)
        gave_up = time.monotonic() - stopped
        time.sleep(max(0.0, down - (time.monotonic() - stopped)))
        private_pg.start()
        assert caller.returncode == 2, out + err
        assert gave_up < retry_for + 15, gave_up
        assert "store.retry_for" in err and private_pg.url.split("@")[1] in err, err
        assert "Traceback" not in err

        def settled() -> bool:
            rows = sm(conf, "list-groups", "--json")
            if rows.returncode:
                return False
            last = json.loads(rows.stdout)[0]["last_run"]
            if last is None or last["status"] == "running":
                return False
            runs = [json.loads(sm(conf, "history", n, "--json").stdout) for n in names]
            return all(r["status"] != "running" for rs in runs for r in rs)

        until(settled, timeout=60, interval=1)
        assert worker.poll() is None and scheduler.poll() is None
        # The runs that ended while the store was out were recorded by their worker once
        # it answered (not taken for lost); the others were started by the scheduler.
        for name in names:
            runs = json.loads(sm(conf, "history", name, "--json").stdout)
            assert len(_starts(marks, name)) == 1, name
            assert [r["status"] for r in runs] == ["success"], runs
        last = json.loads(sm(conf, "list-groups", "--json").stdout)[0]["last_run"]
        assert last["status"] == "success", last
        # Back to normal: a new group run goes through.
        again = sm(conf, "run-group", "g", timeout=90)
        assert again.returncode == 0, again.stdout + again.stderr
    finally:
        for p in (scheduler, worker):
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(60)
    logs = (conf / "worker-w1.log").read_text() + (conf / "scheduler.log").read_text()
    assert "Traceback" not in logs, logs[-4000:]


# ---------------------------------------------------------------- a private Redis


class PrivateRedis:
    """``redis-server`` on a free port, with nothing kept on disk; with ``tls``, on a
    TLS port only, with a self-signed certificate for 127.0.0.1 (``self.ca``)."""

    def __init__(self, root: Path, tls: bool = False):
        self.root, self.port, self.tls = root, free_port(), tls
        self.proc: subprocess.Popen | None = None
        self.ca = root / "redis-cert.pem"
        if tls:
            subprocess.run(
                [
                    *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
                    *("-keyout", str(root / "redis-key.pem"), "-out", str(self.ca)),
                    *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
                ],
                check=True,
                capture_output=True,
            )

    def start(self) -> None:
        port = ("--port", str(self.port))
        if self.tls:
            port = ("--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no")
            port += ("--tls-cert-file", str(self.ca))
            port += ("--tls-key-file", str(self.root / "redis-key.pem"))
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                *port,
                *("--bind", "127.0.0.1", "--save", ""),
                *("--appendonly", "no", "--dir", str(self.root)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        tls = {"ssl": True, "ssl_ca_certs": str(self.ca)} if self.tls else {}
        until(lambda: _pong(redis.Redis("127.0.0.1", self.port, **tls)), timeout=10)

    def crash(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    @property
    def url(self) -> str:
        if self.tls:
            return f"rediss://127.0.0.1:{self.port}/0?ssl_cert_reqs=required&ssl_ca_certs={self.ca}"
        return f"redis://127.0.0.1:{self.port}/0"


def _pong(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


@pytest.fixture(params=["plain"])
def private_redis(tmp_path, request):
    if shutil.which("redis-server") is None:
        need_server("a private Redis", "redis-server is not installed")
    r = PrivateRedis(tmp_path, tls=request.param == "tls")
    r.start()
    yield r
    if r.proc is not None and r.proc.poll() is None:
        r.crash()


def _on_private_redis(
    tmp_path: Path,
    pg_url: str,
    redis: PrivateRedis,
    claim_timeout: float,
    count: int,
    visibility_timeout: float | None = None,
) -> tuple[Path, Path, list]:
    """``count`` marked scripts in a parallel group (cap ``count``) on the session's
    PostgreSQL, emptied, and a private Redis."""
    empty_pg(pg_url)
    celery = {"broker_url": redis.url, "queue": "q", "visibility_timeout": visibility_timeout}
    settings = {
        "store": {"url": pg_url},
        "execution": {"backend": "celery", "lost_after": 30, "claim_timeout": claim_timeout},
        "celery": celery,
    }
    return _setup(tmp_path, settings, count, count)


@pytest.mark.parametrize("visibility_timeout", [None, 3600])
def test_a_run_ending_while_redis_is_away_does_not_leave_its_worker_stuck(
    tmp_path, pg_url, private_redis, visibility_timeout
):
    """A worker whose only slot is busy when Redis dies, and whose run ends before it
    is back: the worker must not go on counting the run as in progress (it would never
    ask the broker for another message).  With a visibility timeout, Redis keeps a copy
    of the message, which cannot be acknowledged while it is away; without one, the
    acknowledgement is the worker's own and cannot fail."""
    conf, marks, names = _on_private_redis(
        tmp_path, pg_url, private_redis, 30, 2, visibility_timeout
    )
    worker = _worker(conf, "w1", 1)
    try:
        caller = subprocess.Popen(
            [sys.executable, str(MAIN), "--config-dir", str(conf), "run", names[0]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        until(lambda: len(_starts(marks, names[0])) == 1, timeout=30)
        import redis

        kept = redis.Redis("127.0.0.1", private_redis.port).hlen("unacked")
        assert kept == (0 if visibility_timeout is None else 1)  # Redis's copy of the message
        private_redis.crash()
        out, err = caller.communicate(timeout=60)  # the run ends with the broker away
        assert caller.returncode == 0, out + err
        log = conf / "worker-w1.log"
        if visibility_timeout is not None:  # the acknowledgement fails, and says so
            until(lambda: "could not be acknowledged" in log.read_text(), timeout=30)
        private_redis.start()
        assert sm(conf, "run", names[1], timeout=60).returncode == 0
        assert worker.poll() is None
        told = "could not be acknowledged" in log.read_text()
        assert told == (visibility_timeout is not None)
        assert [len(_starts(marks, n)) for n in names] == [1, 1]
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def test_a_redis_restarted_without_persistence_leaves_nothing_hanging(
    tmp_path, pg_url, private_redis
):
    conf, marks, names = _on_private_redis(tmp_path, pg_url, private_redis, 3, 4)
    worker = _worker(conf, "w1", 1)  # takes one message; three wait in the broker
    try:
        caller = subprocess.Popen(
            [sys.executable, str(MAIN), "--config-dir", str(conf), "run-group", "g"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        until(lambda: len(list(marks.iterdir())) >= 1, timeout=30)
        private_redis.crash()  # every queued message is gone with it
        threading.Timer(1.0, private_redis.start).start()
        began = time.monotonic()
        out, err = caller.communicate(timeout=60)
        took = time.monotonic() - began
        assert caller.returncode == 1, out + err  # the lost runs are failures
        assert took < 3 + 10, took
        runs = {n: json.loads(sm(conf, "history", n, "--json").stdout) for n in names}
        started = [n for n in names if _starts(marks, n)]
        assert len(started) == 1
        for n in names:
            assert len(_starts(marks, n)) <= 1
            (run,) = runs[n]
            if n in started:
                assert run["status"] == "success", run
            else:
                assert (run["status"], run["detail"]) == ("lost", "no worker took it"), run
        # The worker rode the restart out: it takes new runs from the new broker (once
        # its reconnection's backoff has passed: a claim timeout long enough for that).
        config = conf / "config.yaml"
        config.write_text(config.read_text().replace("claim_timeout: 3", "claim_timeout: 30"))
        assert sm(conf, "run", names[1], timeout=60).returncode == 0
        assert worker.poll() is None
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def _private_sentinel(root: Path, redis: PrivateRedis) -> tuple[subprocess.Popen, int]:
    """A Redis Sentinel (``redis-server --sentinel``) watching ``redis`` as master ``sm``."""
    import redis as redis_py

    port = free_port()
    conf = root / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {root}\nsentinel monitor sm 127.0.0.1 {redis.port} 1\n"
    )
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def knows_master() -> bool:
        try:
            client = redis_py.Redis(port=port)
            return client.execute_command("SENTINEL", "get-master-addr-by-name", "sm") is not None
        except Exception:
            return False

    until(knows_master, timeout=10)
    return proc, port


@pytest.mark.parametrize(
    "private_redis,kind",
    [("plain", "redis"), ("tls", "rediss"), ("plain", "sentinel")],
    indirect=["private_redis"],
)
def test_a_channel_closed_after_its_broker_connection_does_not_end_the_worker(
    tmp_path, private_redis, kind
):
    """kombu closes a worker's channel (putting back the messages of the runs in
    progress) after the connection under it was closed when the broker went away; with
    kombu's own Redis transport that is an AttributeError, which Celery treats as
    unrecoverable and the worker exits.  The configured transport raises a connection
    error instead, which Celery rides out; over TLS and behind a Sentinel as well."""
    from kombu import Connection

    from script_monitor.distributed.app import redis_tls, redis_transport

    sentinel = None
    if kind == "sentinel":
        sentinel, port = _private_sentinel(tmp_path, private_redis)
        conn = Connection(
            f"sentinel://127.0.0.1:{port}",
            transport=redis_transport(sentinel=True),
            transport_options={"master_name": "sm"},
        )
    else:
        url = private_redis.url
        tls = redis_tls(url) if kind == "rediss" else False
        conn = Connection(url, transport=redis_transport(), ssl=tls)
    try:
        _close_after_the_broker_went(conn, private_redis)
    finally:
        if sentinel is not None:
            sentinel.kill()
            sentinel.wait()


def _close_after_the_broker_went(conn, private_redis: PrivateRedis) -> None:
    from kombu import Exchange, Queue
    from kombu.common import ignore_errors

    queue = Queue("q", Exchange("q"), "q")
    with conn.Producer() as producer:
        producer.publish({"run_id": 1}, exchange=queue.exchange, routing_key="q", declare=[queue])
    channel = conn.channel()
    assert queue(channel).get(no_ack=False) is not None  # a run in progress: unacknowledged
    private_redis.crash()
    channel._pool = None  # what the lost connection leaves behind
    conn._do_close_transport()
    ignore_errors(conn, channel.close)  # raised AttributeError with kombu's transport


@pytest.mark.parametrize(
    "url,kind",
    [
        ("redis://h:6379/0", "redis"),
        ("sentinel://h:26379", "sentinel"),
        ("rediss://h:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem", "rediss"),
        ("amqp://guest@h//", None),
    ],
)
def test_the_broker_url_chooses_the_transport_that_survives_a_lost_broker(tmp_path, url, kind):
    """``redis://``, ``rediss://`` and ``sentinel://`` get the transport above, a
    ``rediss://`` URL with its TLS parameters (which kombu reads from the scheme, and a
    transport class would otherwise hide); RabbitMQ keeps kombu's own."""
    import ssl

    from script_monitor.config import load_config
    from script_monitor.distributed.app import make_app, redis_transport

    celery = {"broker_url": url, **({"master_name": "sm"} if kind == "sentinel" else {})}
    conf = make_config(tmp_path / "c", {"a": "true"}, settings={"celery": celery})
    app = make_app(load_config(conf))
    transport = app.conf.broker_transport
    if kind is None:
        assert transport is None
    else:
        assert transport is redis_transport(sentinel=kind == "sentinel")
    options = app.conf.broker_transport_options
    assert options.get("master_name") == celery.get("master_name")
    assert options["ack_emulation"] is False and "visibility_timeout" not in options
    if kind == "rediss":
        tls = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/etc/ca.pem"}
        assert app.conf.broker_use_ssl == tls
        with app.connection_for_write() as conn:
            assert conn.ssl == tls and conn.transport_cls is transport
    else:
        assert not app.conf.broker_use_ssl


@pytest.mark.parametrize("private_redis", ["tls"], indirect=True)
def test_runs_go_through_redis_over_tls_which_checks_the_server_s_certificate(
    tmp_path, pg_url, private_redis
):
    """A ``rediss://`` broker that only speaks TLS: a worker and a caller that trust its
    certificate run a group through it; a caller that trusts another certificate is
    refused with exit 2 and the reason, and records nothing."""
    conf, marks, names = _on_private_redis(tmp_path, pg_url, private_redis, 30, 2)
    worker = _worker(conf, "w1", 2)
    try:
        r = sm(conf, "run-group", "g", timeout=60)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
        assert [len(_starts(marks, n)) for n in names] == [1, 1]
        assert worker.poll() is None
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    (tmp_path / "other").mkdir()
    other = PrivateRedis(tmp_path / "other", tls=True).ca
    config = (conf / "config.yaml").read_text()
    (conf / "config.yaml").write_text(config.replace(str(private_redis.ca), str(other)))
    r = sm(conf, "run", names[0], timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert "cannot reach the broker rediss://127.0.0.1" in r.stderr, r.stderr
    assert "certificate verify failed" in r.stderr.lower(), r.stderr
    assert len(json.loads(sm(conf, "history", names[0], "--json").stdout)) == 1


def test_a_sentinel_broker_without_its_master_name_is_a_config_error(tmp_path):
    conf = make_config(
        tmp_path / "c", {"a": "true"}, settings={"celery": {"broker_url": "sentinel://h:26379"}}
    )
    r = sm(conf, "validate")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "config.yaml:2" in r.stderr and "celery.master_name" in r.stderr, r.stderr


def test_a_scheduled_group_run_that_loses_its_broker_tells_the_run_it_could_not_send(
    tmp_path, pg_url, private_redis
):
    """The broker dies while a scheduled group run is between two runs: the run that
    cannot be sent is failed, and the group run is left to its lease, so the scheduler
    that carries it on once the broker is back tells that failure (before, the group run
    was ended on the spot and the failure was never told)."""
    from helpers import Receiver

    receiver = Receiver()
    marks = tmp_path / "marks"
    marks.mkdir()
    empty_pg(pg_url)
    conf = make_config(
        tmp_path / "c",
        {"first": _marked(marks, "first"), "second": "true"},
        [
            {
                "name": "g",
                "schedule": "* * * * *",
                "timezone": "UTC",
                "execution": "serial",
                "scripts": ["first", "second"],
            }
        ],
        {
            "store": {"url": pg_url},
            "execution": {"backend": "celery", "lost_after": 30, "claim_timeout": 30},
            "celery": {"broker_url": private_redis.url, "queue": "q"},
            "scheduling": {"lease_ttl": 3},
            "notifications": {
                "channels": {"hook": [receiver.url]},
                "default": {"channels": ["hook"], "on": ["failure"]},
            },
        },
    )
    worker = _worker(conf, "w1", 1)
    log = open(tmp_path / "scheduler.log", "w")  # noqa: SIM115
    daemon = subprocess.Popen(  # the clock 2 s before a minute: one tick, then none for 60 s
        [sys.executable, str(MAIN), "--config-dir", str(conf), "scheduler"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "SCRIPT_MONITOR_CLOCK": "1893456058.0"},
    )
    try:
        until(lambda: len(_starts(marks, "first")) == 1, timeout=30)
        private_redis.crash()  # "second" cannot be sent when "first" ends, 1 s later
        until(lambda: "carried on once its lease runs out" in _text(tmp_path), timeout=30)
        private_redis.start()
        until(lambda: len(receiver.posts) >= 1, timeout=60)
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(40)
        log.close()
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        receiver.close()
    text = _text(tmp_path)
    assert code == 0 and "Traceback" not in text, text
    (message,) = receiver.posts
    assert "second" in json.dumps(message), message
    runs = {n: json.loads(sm(conf, "history", n, "--json").stdout) for n in ("first", "second")}
    assert runs["first"][0]["status"] == "success"
    assert runs["second"][0]["status"] == "failed" and "not sent" in runs["second"][0]["detail"]


def _text(tmp_path: Path) -> str:
    return (tmp_path / "scheduler.log").read_text()
