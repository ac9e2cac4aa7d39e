"""Notifications (docs/NOTIFICATIONS.md) end to end: the real CLI, a real HTTP receiver (Apprise
``json://``) and a real SMTP server (aiosmtpd) on loopback, the real store."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import (
    MAIN,
    ROOT,
    Receiver,
    assert_clean_error,
    cli,
    cli_json,
    free_port,
    wait_for,
    write,
)

# ---------------------------------------------------------------- receivers


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


# ---------------------------------------------------------------- configurations


def setup(
    d: Path,
    urls: list[str],
    scripts: str,
    groups: str = "",
    on: str = "[failure, recovery]",
    timeout: float = 5,
    extra: str = "",
) -> Path:
    """A config dir whose config.yaml is written by hand: ``on:`` is a bare YAML key."""
    d.mkdir(parents=True, exist_ok=True)
    url_lines = "".join(f'      - "{u}"\n' for u in urls)
    (d / "config.yaml").write_text(
        f"notifications:\n  channels:\n    ops:\n{url_lines}"
        f"  default:\n    channels: [ops]\n    on: {on}\n  timeout: {timeout}\n{extra}"
    )
    write(d, "scripts.yaml", scripts)
    if groups:
        write(d, "groups.yaml", groups)
    return d


def notes(d: Path) -> list[dict]:
    return cli_json("--config-dir", str(d), "notifications", "--json", "--limit", "100")


# ---------------------------------------------------------------- events


def test_group_failure_one_message_with_failed_scripts_and_log_tail(tmp_path, receiver):
    d = setup(
        tmp_path / "c",
        [receiver.url],
        """
        scripts:
          - name: ok1
            command: echo fine
          - name: bad1
            command: for i in $(seq 1 30); do echo "bad1 line $i"; done; exit 3
          - name: bad2
            command: echo "disk full" >&2; exit 4
        """,
        """
        groups:
          - name: nightly
            execution: serial
            scripts: [ok1, bad1, bad2]
        """,
    )
    r = cli("--config-dir", str(d), "run-group", "nightly")
    assert r.returncode == 1, r.stderr
    assert len(receiver.posts) == 1, receiver.posts
    post = receiver.posts[0]
    assert post["title"] == f"script-monitor: nightly FAILED on {os.uname().nodename}"
    body = post["message"]
    assert "2 of 3 scripts failed" in body
    assert "bad1" in body and "exit code 3" in body
    assert "bad2" in body and "exit code 4" in body and "disk full" in body
    # the last 20 lines of bad1's output, not the 10 before them, nor the log's footer
    assert "bad1 line 30" in body and "bad1 line 11" in body and "bad1 line 10\n" not in body
    assert "finished:" not in body
    assert "- ok1" not in body
    bad1 = cli_json("--config-dir", str(d), "history", "bad1", "--json")[0]
    assert f"logs bad1 --run {bad1['id']}" in body
    [note] = notes(d)
    assert note["event"] == "failure" and note["unit"] == "nightly"
    assert note["channel"] == "ops" and note["state"] == "sent" and note["attempts"] == 1


def test_recovery_follows_a_notified_failure_and_success_is_off_by_default(tmp_path, receiver):
    d = setup(
        tmp_path / "c",
        [receiver.url],
        """
        scripts:
          - name: flaky
            command: test -f ok
        """,
    )
    (d / "ok").write_text("")
    assert cli("--config-dir", str(d), "run", "flaky").returncode == 0  # never failed: silence
    assert receiver.posts == []
    assert cli("--config-dir", str(d), "run", "flaky").returncode == 0
    (d / "ok").unlink(missing_ok=True)
    assert cli("--config-dir", str(d), "run", "flaky").returncode == 1
    (d / "ok").write_text("")
    assert cli("--config-dir", str(d), "run", "flaky").returncode == 0
    assert cli("--config-dir", str(d), "run", "flaky").returncode == 0  # no second recovery
    titles = [p["title"].split(": ", 1)[1] for p in receiver.posts]
    host = os.uname().nodename
    assert titles == [f"flaky FAILED on {host}", f"flaky RECOVERED on {host}"]
    assert [n["event"] for n in notes(d)] == ["recovery", "failure"]


def test_success_when_enabled_and_silence_with_notify_false(tmp_path, receiver):
    d = setup(
        tmp_path / "c",
        [receiver.url],
        """
        scripts:
          - name: a
            command: "true"
          - name: b
            command: "false"
        """,
        """
        groups:
          - name: quiet
            notify: false
            scripts: [a, b]
          - name: loud
            scripts: [a]
        """,
        on="[failure, success]",
    )
    assert cli("--config-dir", str(d), "run-group", "quiet").returncode == 1
    assert cli("--config-dir", str(d), "run-group", "loud").returncode == 0
    assert [p["title"].split()[1:3] for p in receiver.posts] == [["loud", "SUCCEEDED"]]
    assert [n["unit"] for n in notes(d)] == ["loud"]


def test_script_notify_applies_to_run_name_and_group_notify_replaces_keys(tmp_path, receiver):
    other = Receiver()
    try:
        d = setup(
            tmp_path / "c",
            [receiver.url],
            """
            scripts:
              - name: a
                command: "false"
                notify: {on: [success]}
            """,
            """
            groups:
              - name: g
                notify: {channels: [chat]}
                scripts: [a]
            """,
            extra="",
        )
        text = (d / "config.yaml").read_text()
        text = text.replace("  default:", f'    chat: ["{other.url}"]\n  default:')
        (d / "config.yaml").write_text(text)
        assert cli("--config-dir", str(d), "run", "a").returncode == 1  # on: [success] only
        assert receiver.posts == [] and other.posts == []
        assert cli("--config-dir", str(d), "run-group", "g").returncode == 1
        assert receiver.posts == []  # the group's channels replace the default's
        assert len(other.posts) == 1 and " g FAILED " in other.posts[0]["title"]
    finally:
        other.close()


@pytest.mark.slow
def test_fifty_failing_scripts_of_a_parallel_group_send_one_message(tmp_path, receiver):
    names = [f"s{i:02d}" for i in range(50)]
    scripts = "scripts:\n" + "".join(
        f"  - name: {n}\n    command: echo 'broken {n}'; exit 2\n" for n in names
    )
    groups = (
        f"groups:\n  - name: all50\n    execution: parallel\n    scripts: [{', '.join(names)}]\n"
    )
    d = setup(tmp_path / "c", [receiver.url], scripts, groups)
    r = cli("--config-dir", str(d), "run-group", "all50")
    assert r.returncode == 1
    assert len(receiver.posts) == 1
    body = receiver.posts[0]["message"]
    assert "50 of 50 scripts failed" in body
    assert all(f"- {n} (run" in body for n in names)
    assert len(notes(d)) == 1


def test_a_failed_group_run_is_never_recorded_without_its_message(tmp_path, receiver):
    """The failure message is recorded in the transaction that ends the group run, so a
    caller killed at any moment leaves either a running group run (carried on or reaped,
    and told then) or an ended one with its message: a reader polling the history never
    sees a failed group run without it."""
    import threading

    names = [f"s{i:02d}" for i in range(30)]
    scripts = "scripts:\n" + "".join(
        f"  - name: {n}\n    command: seq 1 200; exit 2\n" for n in names
    )
    groups = f"groups:\n  - name: g\n    execution: parallel\n    scripts: [{', '.join(names)}]\n"
    d = setup(tmp_path / "c", [receiver.url], scripts, groups)
    assert cli("--config-dir", str(d), "run-group", "g").returncode == 1  # the history exists
    seen: list[tuple[str, int]] = []
    done = threading.Event()

    def poll() -> None:
        db = sqlite3.connect(d / ".script-monitor" / "history.db", isolation_level=None)
        while not done.is_set():
            db.execute("BEGIN")
            gid, status = db.execute(
                "SELECT id, status FROM group_runs ORDER BY id DESC"
            ).fetchone()
            (told,) = db.execute(
                "SELECT COUNT(*) FROM notifications WHERE ref = ?", (f"g{gid}",)
            ).fetchone()
            db.execute("COMMIT")
            seen.append((status, told))
        db.close()

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        assert cli("--config-dir", str(d), "run-group", "g").returncode == 1
    finally:
        done.set()
        reader.join()
    assert ("running", 0) in seen and ("failed", 1) in seen  # the poll saw both
    assert ("failed", 0) not in seen


def test_run_all_is_one_unit_named_all(tmp_path, receiver):
    d = setup(
        tmp_path / "c",
        [receiver.url],
        """
        scripts:
          - name: a
            command: "false"
          - name: b
            command: "false"
        """,
    )
    assert cli("--config-dir", str(d), "run-all").returncode == 1
    assert len(receiver.posts) == 1
    assert receiver.posts[0]["title"].startswith("script-monitor: (all) FAILED on ")


def test_email_through_a_real_smtp_server(tmp_path):
    from aiosmtpd.controller import Controller

    mails = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            mails.append(envelope)
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        url = f"mailto://127.0.0.1:{port}?from=monitor@example.com&to=ops@example.com"
        d = setup(
            tmp_path / "c",
            [url],
            """
            scripts:
              - name: backup
                command: 'echo "pg_dump: connection refused"; exit 1'
            """,
        )
        assert cli("--config-dir", str(d), "run", "backup").returncode == 1
        assert wait_for(lambda: mails, 5)
    finally:
        controller.stop()
    [mail] = mails
    assert mail.rcpt_tos == ["ops@example.com"]
    text = mail.content.decode(errors="replace")
    assert f"Subject: script-monitor: backup FAILED on {os.uname().nodename}" in text
    assert "pg_dump: connection refused" in text


def test_secret_from_env_file_never_reaches_the_receiver(tmp_path, receiver):
    d = setup(
        tmp_path / "c",
        ["json://hook:${HOOK_PASSWORD}@127.0.0.1:${HOOK_PORT}/hook"],
        """
        scripts:
          - name: leaky
            command: echo "token is $API_TOKEN"; echo "$API_TOKEN" >&2; exit 1
            env_file: leaky.env
        """,
        extra="env_file: global.env\n",
    )
    (d / "leaky.env").write_text("API_TOKEN=tok-5up3r-s3cr3t\n")
    (d / "global.env").write_text(f"HOOK_PORT={receiver.port}\nHOOK_PASSWORD=pw-h00k-s3cr3t\n")
    for f in ("leaky.env", "global.env"):
        (d / f).chmod(0o600)
    assert cli("--config-dir", str(d), "run", "leaky").returncode == 1
    assert len(receiver.posts) == 1
    body = json.dumps(receiver.posts)
    assert "token is ***" in body
    assert "tok-5up3r-s3cr3t" not in body and "pw-h00k-s3cr3t" not in body
    # an undeliverable message's error names no token either
    (d / "global.env").write_text(f"HOOK_PORT={free_port()}\nHOOK_PASSWORD=pw-h00k-s3cr3t\n")
    assert cli("--config-dir", str(d), "run", "leaky").returncode == 1
    out = cli("--config-dir", str(d), "notifications", "--json")
    assert "pw-h00k-s3cr3t" not in out.stdout and "tok-5up3r-s3cr3t" not in out.stdout
    assert json.loads(out.stdout)[0]["state"] == "pending"


# ---------------------------------------------------------------- a receiver that fails


FAILING = """
scripts:
  - name: broken
    command: echo "it broke"; exit 7
"""


def _timed_run(d: Path) -> tuple[int, float]:
    start = time.monotonic()
    r = cli("--config-dir", str(d), "run", "broken")
    return r.returncode, time.monotonic() - start


def _deliver_racing(d: Path) -> None:
    """Two processes deliver every pending message at once."""
    procs = [
        subprocess.Popen(
            [sys.executable, str(MAIN), "--config-dir", str(d), "notifications", "--deliver"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err


@pytest.mark.slow
@pytest.mark.parametrize("failure", ["refused", "error", "hang"])
def test_failing_receiver_never_changes_the_run_then_delivers_once(tmp_path, receiver, failure):
    timeout = 3.0  # the first attempt starts within it on a busy machine too
    baseline = setup(tmp_path / "base", [receiver.url], FAILING, on="[recovery]")
    code0, took0 = _timed_run(baseline)  # no event fires: no delivery at all
    assert code0 == 7 or code0 == 1
    port = free_port() if failure == "refused" else receiver.port
    d = setup(
        tmp_path / "c",
        [f"json://127.0.0.1:{port}/hook"],
        FAILING,
        timeout=timeout,
    )
    receiver.mode = failure
    code, took = _timed_run(d)
    assert code == code0 == 1
    assert took <= took0 + timeout + 1.0, (took, took0)
    [note] = notes(d)
    assert note["state"] == "pending" and note["event"] == "failure"
    if failure != "hang":
        assert note["attempts"] == 1 and note["last_error"]
    assert receiver.posts == []
    # the receiver works again: two processes race to deliver, it arrives exactly once
    if failure == "refused":
        text = (d / "config.yaml").read_text().replace(f":{port}/", f":{receiver.port}/")
        (d / "config.yaml").write_text(text)
    receiver.release.set()
    receiver.mode = "ok"
    receiver.delay = 0.3  # both processes are alive while it is being sent
    posts_before = len(receiver.posts)
    _deliver_racing(d)
    _deliver_racing(d)
    assert len(receiver.posts) - posts_before == 1, receiver.posts
    assert "it broke" in receiver.posts[-1]["message"]
    [note] = notes(d)
    assert note["state"] == "sent"


def test_a_command_leaving_records_an_accepted_message_first_so_it_is_sent_once(tmp_path, receiver):
    """The receiver accepts the message while the history is locked by another
    process, for longer than ``notifications.timeout``: the command does not leave
    before the acceptance is recorded, so no later delivery sends the message again."""
    d = setup(tmp_path / "c", [receiver.url], FAILING, timeout=2)
    db = d / ".script-monitor" / "history.db"
    locked = threading.Event()

    def hold_the_history() -> None:
        con = sqlite3.connect(db, isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        locked.set()
        time.sleep(3.5)
        con.execute("ROLLBACK")
        con.close()

    def lock_then_answer() -> None:  # the answer leaves only once the history is locked
        threading.Thread(target=hold_the_history).start()
        locked.wait(5)

    receiver.on_post = lock_then_answer
    code, took = _timed_run(d)
    assert code == 1 and locked.is_set()
    assert took >= 3.0  # it waited for the lock, past the 2 s it waits for delivery
    [note] = notes(d)
    assert note["state"] == "sent" and note["attempts"] == 1
    receiver.on_post = None
    assert cli("--config-dir", str(d), "notifications", "--deliver").returncode == 0
    assert len(receiver.posts) == 1


def test_retry_goes_only_to_urls_that_have_not_accepted(tmp_path, receiver):
    port = free_port()
    d = setup(
        tmp_path / "c",
        [receiver.url, f"json://127.0.0.1:{port}/second"],
        FAILING,
        timeout=2,
    )
    assert cli("--config-dir", str(d), "run", "broken").returncode == 1
    assert len(receiver.posts) == 1
    [note] = notes(d)
    assert note["state"] == "pending" and "ops URL 2" in note["last_error"]
    second = Receiver()
    try:
        text = (d / "config.yaml").read_text().replace(f":{port}/", f":{second.port}/")
        (d / "config.yaml").write_text(text)
        assert cli("--config-dir", str(d), "notifications", "--deliver").returncode == 0
        assert len(receiver.posts) == 1 and len(second.posts) == 1
    finally:
        second.close()
    assert notes(d)[0]["state"] == "sent"


def test_a_message_older_than_a_day_is_marked_failed(tmp_path):
    d = setup(tmp_path / "c", [f"json://127.0.0.1:{free_port()}/x"], FAILING, timeout=2)
    assert cli("--config-dir", str(d), "run", "broken").returncode == 1
    db = sqlite3.connect(d / ".script-monitor" / "history.db")
    # (on a busy machine the run may exit before its own attempt ends: its claim is let go)
    db.execute("UPDATE notifications SET created = created - 90000, claimed_until = 0")
    db.commit()
    db.close()
    assert cli("--config-dir", str(d), "notifications", "--deliver").returncode == 0
    [note] = notes(d)
    assert note["state"] == "failed" and note["attempts"] >= 1


def test_pending_messages_are_sent_by_the_next_run(tmp_path, receiver):
    port = free_port()
    d = setup(
        tmp_path / "c",
        [f"json://127.0.0.1:{port}/hook"],
        FAILING + "  - name: fine\n    command: 'true'\n",
        timeout=2,
    )
    assert cli("--config-dir", str(d), "run", "broken").returncode == 1
    text = (d / "config.yaml").read_text().replace(f":{port}/", f":{receiver.port}/")
    (d / "config.yaml").write_text(text)
    db = sqlite3.connect(d / ".script-monitor" / "history.db")
    db.execute("UPDATE notifications SET next_try = 0")  # its backoff is over
    db.commit()
    db.close()
    assert cli("--config-dir", str(d), "run", "fine").returncode == 0  # fires nothing itself
    assert len(receiver.posts) == 1 and "broken FAILED" in receiver.posts[0]["title"]


# ---------------------------------------------------------------- lost runs


@pytest.mark.slow
def test_a_run_found_lost_notifies_failure_once(tmp_path, receiver, marker):
    d = setup(
        tmp_path / "c",
        [receiver.url],
        f"""
        scripts:
          - name: long
            command: echo started; sleep 30 # {marker}
        """,
        """
        groups:
          - name: g
            scripts: [long]
        """,
    )
    proc = subprocess.Popen(
        [sys.executable, str(MAIN), "--config-dir", str(d), "run-group", "g"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert wait_for(lambda: (d / "logs" / "long").exists() and any((d / "logs/long").iterdir()))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert cli("--config-dir", str(d), "list").returncode == 0
    assert cli("--config-dir", str(d), "list").returncode == 0
    assert len(receiver.posts) == 1
    assert " g FAILED " in receiver.posts[0]["title"]
    assert "long" in receiver.posts[0]["message"] and "lost" in receiver.posts[0]["message"]


# ---------------------------------------------------------------- commands


def test_notify_test_accepts_fails_and_refuses_unknown(tmp_path, receiver):
    d = setup(tmp_path / "c", [receiver.url], FAILING)
    r = cli("--config-dir", str(d), "notify-test", "ops")
    assert r.returncode == 0, r.stderr
    assert "accepted" in r.stdout
    assert len(receiver.posts) == 1 and "test message" in receiver.posts[0]["title"]
    receiver.mode = "error"
    r = cli("--config-dir", str(d), "notify-test", "ops", "--json")
    assert r.returncode == 1
    data = json.loads(r.stdout)
    assert data["ok"] is False and data["urls"][0]["error"]
    assert_clean_error(cli("--config-dir", str(d), "notify-test", "nope"))
    assert [n["event"] for n in notes(d)] == ["test", "test"]
    assert [n["state"] for n in notes(d)] == ["failed", "sent"]


def test_notifications_lists_newest_first_in_plain_text(tmp_path, receiver):
    d = setup(tmp_path / "c", [receiver.url], FAILING)
    r = cli("--config-dir", str(d), "notifications")
    assert r.returncode == 0 and "No notifications" in r.stdout
    cli("--config-dir", str(d), "run", "broken")
    r = cli("--config-dir", str(d), "notifications")
    assert r.returncode == 0
    assert "failure" in r.stdout and "broken" in r.stdout and "sent" in r.stdout


def test_validate_checks_channels_urls_and_patterns_with_file_and_line(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    (d / "config.yaml").write_text(
        "notifications:\n"
        "  channels:\n"
        "    ops:\n"
        '      - "json://127.0.0.1:9/x"\n'
        '      - "bogus://nowhere"\n'
        "  default:\n"
        "    channels: [ops]\n"
        "    on: [failure]\n"
    )
    write(
        d,
        "scripts.yaml",
        """
        scripts:
          - name: a
            command: "true"
            notify: {channels: [nosuch]}
            alerts:
              - pattern: 'ERROR('
        """,
    )
    r = cli("--config-dir", str(d), "validate")
    assert_clean_error(r)
    assert f"{d / 'scripts.yaml'}:6: error: script 'a': invalid alert pattern" in r.stderr
    (d / "scripts.yaml").write_text((d / "scripts.yaml").read_text().replace("ERROR(", "ERROR"))
    r = cli("--config-dir", str(d), "validate")
    assert_clean_error(r)
    assert f"{d / 'scripts.yaml'}:4: error: script 'a': unknown channel 'nosuch'" in r.stderr
    (d / "scripts.yaml").write_text((d / "scripts.yaml").read_text().replace("nosuch", "ops"))
    r = cli("--config-dir", str(d), "validate")
    assert_clean_error(r)
    assert f"{d / 'config.yaml'}:5: error: channel 'ops': not a usable Apprise URL" in r.stderr
    (d / "config.yaml").write_text((d / "config.yaml").read_text().replace("bogus", "json"))
    r = cli("--config-dir", str(d), "validate")
    assert r.returncode == 0, r.stderr
    # a bare `on:` is the key "on" (YAML 1.1 reads it as true)
    on = cli("--config-dir", str(d), "get-setting", "notifications.default.on")
    assert on.stdout.strip() == '["failure"]'


def test_on_with_an_unknown_event_is_an_error(tmp_path):
    d = setup(tmp_path / "c", ["json://127.0.0.1:9/x"], FAILING, on="[failure, explosion]")
    r = cli("--config-dir", str(d), "validate")
    assert_clean_error(r)
    assert "config.yaml:7" in r.stderr and "explosion" in r.stderr


def test_no_channel_event_imports_no_apprise(tmp_path, receiver):
    d = setup(tmp_path / "c", [receiver.url], "scripts:\n  - name: ok\n    command: 'true'\n")
    probe = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('APPRISE', 'apprise' in sys.modules, file=sys.stderr))\n"
        "from script_monitor.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    for verb in (["run", "ok"], ["list"]):
        r = subprocess.run(
            [sys.executable, "-c", probe, "--config-dir", str(d), *verb],
            capture_output=True,
            text=True,
            env=env,
        )
        assert r.returncode == 0, r.stderr
        assert "APPRISE False" in r.stderr
    assert receiver.posts == []


def test_deliver_tries_each_pending_message_once_per_pass(tmp_path):
    d = setup(tmp_path / "c", [f"json://127.0.0.1:{free_port()}/x"], FAILING, timeout=2)
    assert cli("--config-dir", str(d), "run", "broken").returncode == 1
    start = time.monotonic()
    r = cli("--config-dir", str(d), "notifications", "--deliver", "--json", timeout=30)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - start < 10
    [note] = json.loads(r.stdout)
    assert note["state"] == "pending" and note["attempts"] == 2
    assert "ops URL 1 (json)" in note["last_error"]


def _schedule_a_failing_group(tmp_path: Path, receiver: Receiver) -> tuple[Path, subprocess.Popen]:
    """A scheduler whose group ``nightly`` fails every minute, the first tick one
    simulated second after it starts (its clock runs 60 times faster)."""
    d = setup(
        tmp_path / "c",
        [receiver.url],
        """
        scripts:
          - name: nightly_check
            command: echo "replica lag too high"; exit 2
        """,
        """
        groups:
          - name: nightly
            schedule: "* * * * *"
            scripts: [nightly_check]
        """,
    )
    start = time.time() // 60 * 60 + 59
    env = dict(os.environ, SCRIPT_MONITOR_CLOCK=f"{start}x60")
    proc = subprocess.Popen(
        [sys.executable, str(MAIN), "--config-dir", str(d), "scheduler"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    return d, proc


@pytest.mark.slow
def test_the_scheduler_notifies_a_failing_scheduled_group(tmp_path, receiver):
    _, proc = _schedule_a_failing_group(tmp_path, receiver)
    try:
        assert wait_for(lambda: receiver.posts, 30), "the scheduler sent nothing"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    post = receiver.posts[0]
    assert post["title"] == f"script-monitor: nightly FAILED on {os.uname().nodename}"
    assert "replica lag too high" in post["message"] and "trigger schedule" in post["message"]
    # one message per group run, never two for the same run
    runs = [re.search(r"\(group run (\d+),", p["message"]).group(1) for p in receiver.posts]
    assert len(set(runs)) == len(runs)
    assert "Traceback" not in err


def test_a_stopping_scheduler_records_the_message_it_is_sending(tmp_path, receiver):
    """SIGTERM while a message is on its way: the scheduler waits for the receiver's
    answer and records it, so no later delivery sends the message again."""
    receiver.delay = 2.0  # the answer comes 2 s after the message
    d, proc = _schedule_a_failing_group(tmp_path, receiver)
    try:
        assert receiver.arrived.wait(30), "the scheduler sent nothing"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err, err
    first = min((n for n in notes(d) if n["event"] == "failure"), key=lambda n: n["id"])
    assert first["state"] == "sent" and first["attempts"] == 1, first  # the one on its way
    _deliver_racing(d)  # and what later ticks fired, if any: each message once
    failures = [n for n in notes(d) if n["event"] == "failure"]
    assert {n["state"] for n in failures} == {"sent"}
    assert len(receiver.posts) == len(failures)
    runs = {re.search(r"\(group run (\d+),", p["message"]).group(1) for p in receiver.posts}
    assert len(runs) == len(receiver.posts)


@pytest.mark.slow
def test_every_notify_json_output_matches_the_documentation(tmp_path, receiver, marker):
    """notifications, notify-test, alerts and watchdog --json against docs/JSON.md (the
    other outputs are checked by test_json_schema.py), with every key seen with a value."""
    from script_monitor.serialize import SCHEMA_VERSION
    from script_monitor.store import Store
    from test_json_schema import (
        INHERITED,
        NOTIFY_OBJECTS,
        NOTIFY_OUTPUTS,
        OBJECTS,
        OUTPUTS,
        Checker,
    )

    refused = f"json://127.0.0.1:{free_port()}/down"
    d = setup(
        tmp_path / "c",
        [receiver.url, refused],
        f"""
        scripts:
          - name: bad
            command: echo "ERROR disk"; exit 1
            alerts:
              - pattern: ERROR
                severity: critical
                fail: true
          - name: slow
            command: sleep 30 # {marker}
            max_duration: 1
        """,
        """
        groups:
          - name: every
            schedule: "* * * * *"
            scripts: [bad]
        """,
        on="[failure, missed, overdue]",
        timeout=2,
        extra="scheduling:\n  missed_grace: 60\n",
    )
    text = (d / "config.yaml").read_text()
    text = text.replace("  default:", f'    chat: ["{receiver.url}"]\n  default:')
    (d / "config.yaml").write_text(text.replace("channels: [ops]", "channels: [ops, chat]"))
    assert cli("--config-dir", str(d), "run", "bad").returncode == 1  # chat: sent; ops: pending
    assert cli("--config-dir", str(d), "notify-test", "ops").returncode == 1
    store = Store(d / ".script-monitor")
    store.watch.set_state("scheduler_seen", time.time() - 30)  # a scheduler ran here
    store.close()
    base = time.time() // 60 * 60 + 30
    assert watchdog_json(d, base)[0] == 0  # sets the positions
    slow = subprocess.Popen(
        [sys.executable, str(MAIN), "--config-dir", str(d), "run", "-q", "slow"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for(lambda: (d / "logs" / "slow").exists())
        time.sleep(1.5)
        code, report = watchdog_json(d, base + 300)
    finally:
        slow.send_signal(signal.SIGTERM)
        slow.communicate(timeout=30)
    assert code == 1 and report["schema_version"] == SCHEMA_VERSION
    assert report["missed"] and report["overdue"] and report["scheduler"]["state"] == "down"
    r = cli("--config-dir", str(d), "notify-test", "ops", "--json")
    outputs = {
        "notifications": [notes(d)],
        "alerts": [cli_json("--config-dir", str(d), "alerts", "--json")],
        "notify-test": [json.loads(r.stdout)],
        "watchdog": [report],
    }
    assert set(outputs) == NOTIFY_OUTPUTS <= set(OUTPUTS)
    checker = Checker()
    for command, values in outputs.items():
        for value in values:
            checker.check(value, OUTPUTS[command], command)
    documented = {
        (t, k) for t, keys in OBJECTS.items() if t in NOTIFY_OBJECTS for k in keys
    } - INHERITED
    assert documented - checker.seen == set(), "keys never seen with a value"


def watchdog_json(d: Path, at: float) -> tuple[int, dict]:
    r = cli("--config-dir", str(d), "watchdog", "--json", env={"SCRIPT_MONITOR_CLOCK": f"{at}"})
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


def test_notifications_alerts_and_watchdog_on_postgresql(pg_url, tmp_path, receiver):
    """The outbox, alerts and watchdog tables through the PostgreSQL store (docs/DISTRIBUTED.md)."""
    from conftest import empty_pg

    empty_pg(pg_url)
    d = setup(
        tmp_path / "c",
        [receiver.url],
        """
        scripts:
          - name: pgbad
            command: echo "ERROR on pg"; exit 5
            alerts:
              - pattern: ERROR
        """,
        """
        groups:
          - name: pgsched
            schedule: "* * * * *"
            scripts: [pgbad]
        """,
        on="[failure, recovery, missed]",
        extra="scheduling:\n  missed_grace: 60\n",
    )
    env = {"SCRIPT_MONITOR_STORE_URL": pg_url}
    assert cli("--config-dir", str(d), "run", "pgbad", env=env).returncode == 1
    assert cli("--config-dir", str(d), "run", "pgbad", env=env).returncode == 1
    assert [p["title"].split()[1:3] for p in receiver.posts] == [["pgbad", "FAILED"]] * 2
    got = cli_json("--config-dir", str(d), "notifications", "--json", env=env)
    assert [(n["event"], n["state"]) for n in got] == [("failure", "sent")] * 2
    [a, _] = cli_json("--config-dir", str(d), "alerts", "--json", env=env)
    assert (a["script"], a["line_number"], a["line"]) == ("pgbad", 1, "ERROR on pg")
    base = time.time() // 60 * 60 + 30
    for at, code in ((base, 0), (base + 300, 1), (base + 301, 0)):
        r = cli(
            "--config-dir",
            str(d),
            "watchdog",
            "--json",
            env={**env, "SCRIPT_MONITOR_CLOCK": f"{at}"},
        )
        assert r.returncode == code, r.stderr
    assert [p["title"].split()[1:3] for p in receiver.posts][-1] == ["pgsched", "MISSED"]
    r = cli("--config-dir", str(d), "notifications", "--deliver", env=env)
    assert r.returncode == 0, r.stderr
