"""Hardening of ``serve`` and the CLI (docs/SECURITY.md): bounded launches, secrets masked
in every view, strong tokens, throttled guessing, malformed requests, slow clients,
revoked sessions, private files, unauthenticated details, exports, terminal escapes,
caching; roles, the audit trail and the unix socket.  Real servers, real HTTP, real CLI
processes and a real SQLite history."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import MAIN, assert_clean_error, cli, history, until, wait_for
from web_helpers import TOKEN, Server, wait_for_run, web_config, when_free

VIEWER = "viewer-token-0123456789abcdef"
OPERATOR = "operator-token-0123456789abcdef"
SECRET = "apikey-1234567890"


def csrf_of(c, path: str = "/") -> str:
    page = c.get(path)
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def login(server: Server, token: str = TOKEN):
    c = server.client(follow_redirects=False)
    form = c.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    r = c.post("/login", data={"csrf": csrf, "token": token, "next": "/"})
    assert r.status_code == 303, r.text
    return c


def audit_rows(conf: Path) -> list[dict]:
    r = cli("--config-dir", str(conf), "audit", "--json", "-n", "1000")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def roles(tmp_path_factory):
    """A server with an admin token from ${VAR}, a viewer token in config.yaml and an
    operator token from a file."""
    d = tmp_path_factory.mktemp("roles") / "conf"
    settings = {
        "web": {
            "token": "${SM_ADMIN_TOKEN}",
            "tokens": [
                {"name": "dash", "role": "viewer", "token": VIEWER},
                {"name": "ci", "role": "operator", "token_file": "ci.token"},
            ],
        }
    }
    conf = web_config(d, settings, more={"sleeper": "sleep 30"})
    (conf / "ci.token").write_text(OPERATOR + "\n")
    os.chmod(conf / "config.yaml", 0o600)
    os.chmod(conf / "ci.token", 0o600)
    server = Server(conf, env={"SM_ADMIN_TOKEN": TOKEN})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def token_server(tmp_path_factory):
    """A server with one token (web.token), as configured before roles existed."""
    conf = web_config(tmp_path_factory.mktemp("token") / "conf", {"web": {"token": TOKEN}})
    os.chmod(conf / "config.yaml", 0o600)
    server = Server(conf)
    yield server
    server.stop()


# ---------------------------------------------------------------- 1. bounded launches


def test_a_running_script_is_refused_not_started_again(tmp_path, marker):
    conf = web_config(tmp_path / "conf", more={"sleeper": "sleep 30"})
    server = Server(conf, marker=marker)
    try:
        codes = [server.post("/api/v1/scripts/sleeper/run").status_code for _ in range(20)]
        assert codes[0] == 202 and set(codes[1:]) == {409}, codes
        run = wait_for_run(conf, "sleeper", "running")
        r = server.post("/api/v1/scripts/sleeper/run")
        assert r.status_code == 409
        assert r.json() == {"error": f"script 'sleeper' is already running (run {run['id']})",
                            "run": run["id"]}  # fmt: skip
        assert len(history(conf, "sleeper")) == 1  # twenty requests, one run
        # the dashboard shows the refusal as a message on the script's page
        with server.client(follow_redirects=False) as c:
            csrf = csrf_of(c)
            r = c.post("/scripts/sleeper/run", data={"csrf": csrf})
            assert r.status_code == 409 and "already running" in r.text
            assert '<p class="flash bad">' in r.text and "<h1>409</h1>" not in r.text
            assert "<h1>sleeper</h1>" in r.text and 'id="history"' in r.text
            hx = {"HX-Request": "true"}
            r = c.post("/scripts/sleeper/run", data={"csrf": csrf}, headers=hx)
            assert r.status_code == 409 and r.text.startswith('<p class="flash bad">')
    finally:
        server.stop()


def test_web_launches_are_capped(tmp_path, marker):
    more = {"sleeper": "sleep 30", "napper": "sleep 30", "dozer": "sleep 30"}
    conf = web_config(tmp_path / "conf", {"web": {"max_launches": 2}}, more=more)
    server = Server(conf, marker=marker)
    try:
        assert server.post("/api/v1/scripts/sleeper/run").status_code == 202
        assert server.post("/api/v1/scripts/napper/run").status_code == 202
        r = server.post("/api/v1/scripts/dozer/run")  # two alive: web.max_launches
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        assert "web.max_launches" in r.json()["error"]
        assert not history(conf, "dozer")
    finally:
        server.stop()


def test_a_group_whose_overlap_policy_is_allow_may_run_twice(tmp_path, marker):
    conf = web_config(tmp_path / "conf", more={"sleeper": "sleep 30"})
    (conf / "groups.yaml").write_text(
        "groups:\n"
        "  - {name: one_at_a_time, scripts: [sleeper]}\n"
        "  - {name: any_number, overlap: allow, scripts: [quick_ok]}\n"
    )
    server = Server(conf, marker=marker)
    try:
        assert server.post("/api/v1/groups/one_at_a_time/run").status_code == 202
        assert server.post("/api/v1/groups/one_at_a_time/run").status_code == 409
        assert server.post("/api/v1/groups/any_number/run").status_code == 202
        assert server.post("/api/v1/groups/any_number/run").status_code == 202
    finally:
        server.stop()


# ---------------------------------------------------------------- 2. secrets in views


@pytest.fixture(scope="module")
def secret_conf(tmp_path_factory):
    d = tmp_path_factory.mktemp("secrets") / "conf"
    (d.parent / "db.env").write_text("DB_PASSWORD=hunter2-supersecret\n")
    os.chmod(d.parent / "db.env", 0o600)
    more = {
        "secret_job": {
            "command": f"echo {SECRET} hunter2-supersecret; echo done",
            "description": "uses hunter2-supersecret",
            "env": {"API_KEY": SECRET},
            "secret_env": ["API_KEY"],
            "env_file": "../db.env",
        }
    }
    settings = {
        "web": {"token": TOKEN},
        "notifications": {
            "channels": {
                "ops": [
                    "json://user:LiteralPw5555@127.0.0.1:9/p/x",
                    "xml://127.0.0.1:9/?-X-Secret=HeaderSecret-9999&room=general",
                ]
            }
        },
    }
    conf = web_config(d, settings, more=more)
    os.chmod(conf / "config.yaml", 0o600)
    return conf


PLANTED = (SECRET, "hunter2-supersecret", "LiteralPw5555", "HeaderSecret-9999", TOKEN)


def test_the_script_page_and_the_api_mask_secrets(secret_conf):
    server = Server(secret_conf)
    try:
        page = server.get("/scripts/secret_job", token=TOKEN).text
        assert "<code>echo *** ***; echo done</code>" in page
        for path in ("/", "/scripts/secret_job", "/api/v1/scripts", "/api/v1/groups"):
            text = server.get(path, token=TOKEN).text
            assert not [s for s in PLANTED if s in text], path
    finally:
        server.stop()


@pytest.mark.parametrize(
    "args",
    [
        ["show-config"],
        ["show-config", "--json"],
        ["get-setting", "web"],
        ["get-setting", "web.token"],
        ["get-setting", "notifications"],
        ["get-setting", "notifications.channels"],
        ["list", "--json"],
        ["validate"],
    ],
)
def test_configuration_dumps_mask_secrets(secret_conf, args):
    r = cli("--config-dir", str(secret_conf), *args)
    assert r.returncode == 0, r.stderr
    assert not [s for s in PLANTED if s in r.stdout + r.stderr], r.stdout
    if args[0] == "show-config":
        assert "json://user:***@127.0.0.1:9/p/x" in r.stdout
        assert "-X-Secret=***&room=general" in r.stdout
    if args == ["get-setting", "web.token"]:
        assert r.stdout == "***\n"


# ---------------------------------------------------------------- 3. weak tokens


@pytest.mark.parametrize("token", ["x", "short", "  fifteen-chars  ", "               "])
def test_a_public_bind_with_a_weak_or_blank_token_is_refused(tmp_path, token):
    conf = web_config(tmp_path / "conf")
    env = {"SCRIPT_MONITOR_WEB_TOKEN": token}
    r = cli("--config-dir", str(conf), "serve", "--host", "0.0.0.0", "--port", "0", env=env)
    assert_clean_error(r)
    assert "shorter than 16 characters" in r.stderr or "needs a token" in r.stderr


def test_tokens_are_stripped_alike_in_the_form_and_the_bearer_header(tmp_path):
    conf = web_config(tmp_path / "conf", {"web": {"token": f"  {TOKEN}  "}})
    server = Server(conf)
    try:
        r = server.get("/api/v1/scripts", headers={"Authorization": f"Bearer  {TOKEN}"})
        assert r.status_code == 200
        assert server.get("/api/v1/scripts", token=TOKEN).status_code == 200
        c = server.client(follow_redirects=False)
        csrf = csrf_of(c, "/login")
        for blank in ("", "   "):
            assert c.post("/login", data={"csrf": csrf, "token": blank}).status_code == 401
        assert c.post("/login", data={"csrf": csrf, "token": f" {TOKEN}\t"}).status_code == 303
        c.close()
    finally:
        server.stop()


# ---------------------------------------------------------------- 4. guessing


def test_wrong_tokens_are_throttled_per_client_address(token_server):
    guesser = {"X-Forwarded-For": "203.0.113.7"}
    codes = [
        token_server.get(
            "/api/v1/scripts", headers={**guesser, "Authorization": f"Bearer guess{i}"}
        )
        for i in range(12)
    ]
    assert [r.status_code for r in codes] == [401] * 10 + [429] * 2
    assert 50 <= int(codes[-1].headers["retry-after"]) <= 60
    # blocked: even the right token, and the login form, from that address
    assert token_server.get("/api/v1/scripts", token=TOKEN, headers=guesser).status_code == 429
    # another address is not
    other = {"X-Forwarded-For": "203.0.113.8"}
    assert token_server.get("/api/v1/scripts", token=TOKEN, headers=other).status_code == 200
    # failed sign-ins count the same way
    form = {"X-Forwarded-For": "203.0.113.9"}
    with token_server.client(follow_redirects=False, headers=form) as c:
        csrf = csrf_of(c, "/login")
        started = time.monotonic()
        codes = [c.post("/login", data={"csrf": csrf, "token": "nope"}) for _ in range(11)]
        assert time.monotonic() - started < 5  # answered at once, refused by count
    assert [r.status_code for r in codes] == [401] * 10 + [429]
    until(lambda: token_server.stderr().count("too many failed sign-ins") == 2)
    refused = [r for r in audit_rows(token_server.config_dir) if r["client"] == "203.0.113.7"]
    assert [r["reason"] for r in refused] == ["bad_token"] * 10 + ["throttled"]


# ---------------------------------------------------------------- 5. malformed requests


def raw(server: Server, data: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_malformed_headers_and_cookies_give_400_never_500(token_server):
    port = token_server.port
    host = f"127.0.0.1:{port}".encode()
    deep = __import__("base64").urlsafe_b64encode(b"[" * 1400 + b"]" * 1400).decode()
    requests = [
        b"POST /login HTTP/1.1\r\nHost: " + host + b"\r\nOrigin: http://[\r\n"
        b"Content-Length: 0\r\nConnection: close\r\n\r\n",
        b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1:\xb2\r\nConnection: close\r\n\r\n",
        b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1:\xd9\xa1\r\nConnection: close\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: " + host + b"\r\nCookie: sm_session=" + deep.encode()
        + b".AAAA\r\nConnection: close\r\n\r\n",
    ]  # fmt: skip
    # a bad Origin or a Host that is not a host name: 400 (a well-formed Host of another
    # server stays a 403); a cookie that is not a session: ignored (/metrics is open)
    for request, code in zip(requests, (b"400", b"400", b"400", b"200"), strict=True):
        status = raw(token_server, request).split(b"\r\n", 1)[0]
        assert status.split()[1] == code, (request[:60], status)
    # a client that goes away in the middle of its body
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(
                b"POST /login HTTP/1.1\r\nHost: " + host + b"\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 1000\r\n\r\ncsrf=abc"
            )
    time.sleep(0.5)
    assert token_server.get("/api/v1/health").status_code == 200
    log = token_server.stderr()
    assert "Traceback" not in log and "unexpected error" not in log, log[-3000:]


# ---------------------------------------------------------------- 6. slow clients


def test_slow_and_silent_clients_are_cut_off(token_server):
    """A connection that never finishes its headers is closed after 10 s."""
    silent = socket.create_connection(("127.0.0.1", token_server.port))
    trickle = socket.create_connection(("127.0.0.1", token_server.port))
    trickle.sendall(b"GET /api/v1/health HTTP/1.1\r\n")
    started = time.monotonic()
    closed: dict[str, float] = {}
    for s in (silent, trickle):
        s.setblocking(False)
    while len(closed) < 2 and time.monotonic() - started < 25:
        for name, s in (("silent", silent), ("trickle", trickle)):
            if name in closed:
                continue
            try:
                if name == "trickle":
                    s.send(b"X")  # one byte a second: never a whole header line
                if s.recv(1024) == b"":
                    closed[name] = time.monotonic() - started
            except BlockingIOError:
                pass
            except OSError:
                closed[name] = time.monotonic() - started
        time.sleep(1)
    silent.close()
    trickle.close()
    assert set(closed) == {"silent", "trickle"}, closed
    assert all(8 <= t <= 14 for t in closed.values()), closed


# ---------------------------------------------------------------- 7. logout


def test_logout_revokes_the_session_for_good(token_server):
    c = login(token_server)
    cookie = c.cookies["sm_session"]
    assert c.get("/api/v1/scripts").status_code == 200
    csrf = csrf_of(c)
    assert c.post("/logout", data={"csrf": csrf}).status_code == 303
    c.close()
    with token_server.client(follow_redirects=False) as replay:
        replay.cookies.set("sm_session", cookie)
        assert replay.get("/api/v1/scripts").status_code == 401
        assert replay.get("/").status_code == 303
        r = replay.post("/api/v1/scripts/quick_ok/run", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 401
    rows = [r for r in audit_rows(token_server.config_dir) if r["action"] in ("login", "logout")]
    assert ("login", "admin", "accepted") in [
        (r["action"], r["token_name"], r["result"]) for r in rows
    ]
    assert ("logout", "admin", "accepted") in [
        (r["action"], r["token_name"], r["result"]) for r in rows
    ]


def test_a_revoked_session_stays_revoked_after_a_restart(tmp_path):
    conf = web_config(tmp_path / "conf", {"web": {"token": TOKEN}})
    server = Server(conf)
    try:
        c = login(server)
        cookie = c.cookies["sm_session"]
        assert c.post("/logout", data={"csrf": csrf_of(c)}).status_code == 303
    finally:
        server.stop()
    server = Server(conf)
    try:
        with server.client(follow_redirects=False) as replay:
            replay.cookies.set("sm_session", cookie)
            assert replay.get("/api/v1/scripts").status_code == 401
        assert login(server).get("/api/v1/scripts").status_code == 200  # a new one works
    finally:
        server.stop()


# ---------------------------------------------------------------- 8. private files


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_the_history_is_private_whatever_the_umask(tmp_path, umask):
    conf = web_config(tmp_path / "conf")
    r = subprocess.run(
        [sys.executable, str(MAIN), "--config-dir", str(conf), "run", "quick_ok"],
        preexec_fn=lambda: os.umask(umask),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    state = conf / ".script-monitor"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    files = [p for p in state.iterdir() if p.name.startswith("history.db")]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files), [
        (p.name, oct(p.stat().st_mode)) for p in files
    ]


def test_validate_warns_about_secret_files_others_may_read(tmp_path):
    env = tmp_path / "app.env"
    env.write_text("PASSWORD=x\n")
    conf = web_config(tmp_path / "conf", {"web": {"token": TOKEN}, "env_file": str(env)})
    os.chmod(env, 0o644)
    os.chmod(conf / "config.yaml", 0o644)
    r = cli("--config-dir", str(conf), "validate")
    assert r.returncode == 0
    assert f"{env}: warning: holds secrets (env_file) and is readable by others" in r.stdout
    assert f"{conf / 'config.yaml'}: warning: holds a web token" in r.stdout
    os.chmod(env, 0o600)
    os.chmod(conf / "config.yaml", 0o600)
    r = cli("--config-dir", str(conf), "validate")
    assert r.returncode == 0 and "readable by others" not in r.stdout


# ---------------------------------------------------------------- 9. unauthenticated


def test_visitors_without_a_token_learn_nothing_about_the_host(token_server):
    root = str(token_server.config_dir)
    health = token_server.get("/api/v1/health").json()
    assert set(health) == {"status", "version"} and health["status"] == "ok"
    full = token_server.get("/api/v1/health", token=TOKEN).json()
    assert {"scheduler", "heartbeat", "config_error"} <= set(full)
    for path in ("/login", "/loginX"):
        with token_server.client(follow_redirects=True) as c:
            assert root not in c.get(path).text
    assert token_server.get("/no-such-page", follow_redirects=False).status_code == 303
    for path in ("/api/v1/healthX", "/api/v1/health/x", "/favicon.icoX", "/static/app.jsX"):
        r = token_server.get(path, follow_redirects=False)
        assert r.status_code in (401, 303), (path, r.status_code)
    assert root in token_server.get("/", token=TOKEN).text  # a token holder sees it


def test_a_configuration_error_is_shown_only_to_token_holders(tmp_path):
    conf = web_config(tmp_path / "conf", {"web": {"token": TOKEN}})
    server = Server(conf)
    try:
        (conf / "scripts.yaml").write_text("scripts:\n  - {name: x, comand: true}\n")
        until(lambda: server.get("/api/v1/health").json()["status"] == "error")
        assert server.get("/api/v1/health").json() == {
            "status": "error",
            "version": server.get("/api/v1/health").json()["version"],
        }
        detail = server.get("/api/v1/health", token=TOKEN).json()["config_error"]
        assert "scripts.yaml" in detail
        with server.client(follow_redirects=True) as c:
            assert "scripts.yaml" not in c.get("/login").text
    finally:
        server.stop()


# ---------------------------------------------------------------- 10. exports


def test_exports_of_a_group_named_like_an_option_work(tmp_path):
    conf = web_config(tmp_path / "conf")
    (conf / "groups.yaml").write_text(
        "groups:\n  - {name: '-nightly', schedule: '0 3 * * *', scripts: [quick_ok]}\n"
    )
    r = cli("--config-dir", str(conf), "export-cron", "--", "-nightly")
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x and not x.startswith("#"))
    command = " ".join(line.split()[5:]).replace("\\%", "%")
    assert command.endswith("run-group --trigger schedule -- -nightly")
    ran = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    r = cli("--config-dir", str(conf), "export-systemd", "--", "-nightly")
    exec_start = re.search(r"^ExecStart=(.*)$", r.stdout, re.M).group(1)
    assert exec_start.endswith("--trigger schedule -- -nightly")
    assert history(conf, "quick_ok")[0]["trigger"] == "schedule"


# ---------------------------------------------------------------- 11. terminal escapes

ESCAPES = (
    r"printf '\033[31mred\033[0m \033]8;;javascript:alert(1)\033\\click\033]8;;\033\\"
    r" \033[2J\033]0;title\007 \302\233A end\n'"
)


def on_a_terminal(*args: str) -> bytes:
    """Run the CLI with its stdout on a pseudo-terminal; what it wrote there."""
    import pty

    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, str(MAIN), "--no-pager", *args],
        stdout=child,
        stderr=subprocess.PIPE,
    )
    os.close(child)
    out = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    proc.wait(30)
    os.close(main)
    return out


def test_logs_on_a_terminal_keep_colours_and_show_other_escapes(tmp_path):
    conf = web_config(tmp_path / "conf", more={"escapes": ESCAPES})
    assert cli("--config-dir", str(conf), "run", "escapes").returncode == 0
    shown = on_a_terminal("--config-dir", str(conf), "logs", "escapes")
    assert b"\x1b[31mred\x1b[0m" in shown  # colours act
    assert b"\x1b]" not in shown and b"\x1b[2J" not in shown and b"\x07" not in shown
    assert b"^[]8;;javascript:alert(1)^[\\click" in shown  # visible, inert
    assert b"^[[2J^[]0;title^G" in shown and b"<U+009B>A end" in shown
    raw_out = on_a_terminal("--config-dir", str(conf), "logs", "escapes", "--raw")
    assert b"\x1b]8;;javascript:alert(1)\x1b\\click" in raw_out
    piped = cli("--config-dir", str(conf), "logs", "escapes").stdout
    assert "\x1b]8;;javascript" in piped  # not a terminal: the log as it is


# ---------------------------------------------------------------- 12. caching


def test_api_responses_are_never_cached(token_server):
    run = when_free(lambda: token_server.post("/api/v1/scripts/quick_ok/run", token=TOKEN))
    assert run.status_code == 202
    done = wait_for_run(token_server.config_dir, "quick_ok", "success")
    for path in (
        "/api/v1/scripts",
        "/api/v1/groups",
        f"/api/v1/runs/{done['id']}",
        f"/api/v1/runs/{done['id']}/log",
        "/api/v1/health",
        "/metrics",
        "/api/v1/openapi.json",
    ):
        r = token_server.get(path, token=TOKEN)
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store", path
    assert token_server.get("/api/v1/scripts").headers["cache-control"] == "no-store"  # 401 too


# ---------------------------------------------------------------- token_server and the audit trail


def test_a_viewer_reads_but_may_not_launch_an_operator_may(roles):
    conf = roles.config_dir
    assert roles.get("/api/v1/scripts", token=VIEWER).status_code == 200
    assert roles.get("/scripts/quick_ok", token=VIEWER).status_code == 200
    assert "scheduler" in roles.get("/api/v1/health", token=VIEWER).json()
    r = roles.post("/api/v1/scripts/never_ran/run", token=VIEWER)
    assert r.status_code == 403 and "operator role" in r.json()["error"]
    assert not history(conf, "never_ran")
    r = roles.post("/api/v1/scripts/never_ran/run", token=OPERATOR)
    assert r.status_code == 202
    wait_for_run(conf, "never_ran")
    rows = [r for r in audit_rows(conf) if r["target"] == "script:never_ran"]
    assert [(r["token_name"], r["result"], r["reason"]) for r in rows] == [
        ("dash", "refused", "role"),
        ("ci", "accepted", ""),
    ]
    assert all(r["client"] == "127.0.0.1" and r["action"] == "launch" for r in rows)


def test_only_admins_see_the_audit_trail(roles):
    assert roles.get("/api/v1/audit", token=VIEWER).status_code == 403
    assert roles.get("/api/v1/audit", token=OPERATOR).status_code == 403
    rows = roles.get("/api/v1/audit", token=TOKEN).json()
    assert rows and {"token_name", "client", "action", "target", "result"} <= set(rows[0])
    page = roles.get("/audit", token=TOKEN)
    assert page.status_code == 200 and "Audit trail" in page.text
    assert roles.get("/audit", token=VIEWER).status_code == 403
    assert 'href="/audit"' in roles.get("/", token=TOKEN).text
    assert 'href="/audit"' not in roles.get("/", token=VIEWER).text


def test_metrics_count_refusals_by_reason(roles):
    roles.post("/api/v1/scripts/quick_ok/run", token=VIEWER)
    text = roles.get("/metrics", token=VIEWER).text
    found = dict(re.findall(r'script_monitor_web_refusals_total\{reason="(\w+)"\} (\d+)', text))
    assert int(found.get("role", 0)) >= 1, text[-2000:]


def test_refusals_before_the_handler_are_audited_but_bounded(roles):
    conf = roles.config_dir
    cross = {"Origin": "http://evil.example", "X-Forwarded-For": "198.51.100.40"}
    assert roles.post("/api/v1/groups/pair/run", token=OPERATOR, headers=cross).status_code == 403
    anon = {"X-Forwarded-For": "198.51.100.41"}
    for _ in range(15):
        assert roles.post("/api/v1/scripts/quick_ok/run", headers=anon).status_code == 401
    with roles.client(follow_redirects=False, headers={"X-Forwarded-For": "198.51.100.42"}) as c:
        csrf = csrf_of(c, "/login")
        assert c.post("/login", data={"csrf": csrf, "token": VIEWER}).status_code == 303
        assert c.post("/logout", data={"csrf": "wrong"}).status_code == 403
    rows = audit_rows(conf)
    by = {a: [r for r in rows if r["client"] == a] for a in ("198.51.100.40", "198.51.100.41")}
    assert [(r["action"], r["target"], r["reason"]) for r in by["198.51.100.40"]] == [
        ("launch", "group:pair", "cross_site")
    ]
    assert [r["reason"] for r in by["198.51.100.41"]] == ["no_token"] * 10  # then quiet
    assert [(r["action"], r["reason"]) for r in rows if r["client"] == "198.51.100.42"] == [
        ("login", ""),
        ("logout", "csrf"),
    ]


def test_the_audit_command_reads_since_a_time(roles):
    conf = roles.config_dir
    assert roles.get("/api/v1/scripts", headers={"Authorization": "Bearer nope"}).status_code == 401
    r = cli("--config-dir", str(conf), "audit", "--since", "10m")
    assert r.returncode == 0 and "auth" in r.stdout and "bad_token" in r.stdout
    future = cli("--config-dir", str(conf), "audit", "--since", "2999-01-01", "--json")
    assert json.loads(future.stdout) == []
    bad = cli("--config-dir", str(conf), "audit", "--since", "yesterday")
    assert_clean_error(bad)
    assert "--since 'yesterday'" in bad.stderr


def test_a_token_variable_that_is_not_set_is_a_clear_error(tmp_path):
    conf = web_config(tmp_path / "conf", {"web": {"tokens": [{"name": "a", "token": "${NOPE_X}"}]}})
    r = cli("--config-dir", str(conf), "serve", "--port", "0")
    assert_clean_error(r)
    assert "config.yaml:" in r.stderr and "${NOPE_X} is not set" in r.stderr
    r = cli("--config-dir", str(conf), "validate")  # it may be set where serve runs
    assert r.returncode == 0 and "warning: web.tokens[0] 'a': ${NOPE_X} is not set" in r.stdout


# ---------------------------------------------------------------- loopback and the socket


def test_loopback_without_a_token_says_whom_it_trusts(tmp_path):
    server = Server(web_config(tmp_path / "conf"))
    try:
        assert wait_for(lambda: "every local account and process" in server.stderr(), 10)
    finally:
        server.stop()
    server = Server(web_config(tmp_path / "tok", {"web": {"token": TOKEN}}))
    try:
        assert server.get("/api/v1/health").status_code == 200
        assert "every local account" not in server.stderr()
    finally:
        server.stop()


def test_a_unix_socket_is_private_to_its_owner(tmp_path):
    conf = web_config(tmp_path / "conf")
    path = tmp_path / "sm.sock"
    server = Server(conf, "--socket", str(path))
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_ISSOCK(path.stat().st_mode)
        assert server.get("/api/v1/scripts").status_code == 200
        assert server.post("/api/v1/scripts/quick_ok/run").status_code == 202
        assert "every local account" not in server.stderr()
        rows = audit_rows(conf)
        assert rows[-1]["client"] == "unix" and rows[-1]["result"] == "accepted"
    finally:
        server.stop()
    assert not path.exists()


# ---------------------------------------------------------------- both backends


def test_the_audit_trail_and_revocations_on_both_backends(backend_store):
    from script_monitor.states import AuditAction, AuditResult, Refusal

    audit = backend_store.audit
    audit.record("ci", "192.0.2.1", AuditAction.LAUNCH, "script:a", AuditResult.ACCEPTED)
    audit.record(
        "-", "192.0.2.2", AuditAction.AUTH, "/api/v1/scripts", AuditResult.REFUSED,
        Refusal.BAD_TOKEN,
    )  # fmt: skip
    rows = audit.rows()
    assert [(r.token_name, r.result, r.reason) for r in rows] == [
        ("ci", "accepted", ""),
        ("-", "refused", "bad_token"),
    ]
    assert audit.rows(since=time.time() + 60) == []
    assert audit.refusals() == {"bad_token": 1}
    audit.revoke("sid-1", time.time() + 3600)
    audit.revoke("sid-1", time.time() + 3600)  # twice is fine
    audit.revoke("sid-old", time.time() - 1)
    assert audit.revoked() == {"sid-1"}
    # Pruned rows leave the trail, but not the refusal counts /metrics shows.
    report = backend_store.retention.prune(time.time() + 1, keep=0)
    assert report.audit == 2 and audit.rows() == []
    assert audit.refusals() == {"bad_token": 1}
