"""Who may use ``serve`` and from where (docs/WEB.md): binding, token, session cookie,
CSRF, Origin and Host checks, escaping, and the file system behind URLs."""

from __future__ import annotations

import re
import subprocess
import sys
import zlib

import httpx
import pytest
from markupsafe import escape

from helpers import ROOT, assert_clean_error, cli, history
from web_helpers import TOKEN, Server, wait_for_run, web_config, when_free


@pytest.fixture(scope="module")
def conf(tmp_path_factory):
    d = web_config(tmp_path_factory.mktemp("websec") / "conf")
    cli("--config-dir", str(d), "run", "xss_probe")
    cli("--config-dir", str(d), "run", "quick_ok")
    return d


@pytest.fixture(scope="module")
def server(conf):
    """A server with a token (from the environment, which wins over web.token)."""
    (conf / "config.yaml").write_text("web:\n  token: not-this-one-but-the-environments\n")
    s = Server(conf, env={"SCRIPT_MONITOR_WEB_TOKEN": TOKEN})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    """A server without a token, on loopback."""
    d = web_config(tmp_path_factory.mktemp("webopen") / "conf")
    cli("--config-dir", str(d), "run", "xss_probe")
    s = Server(d)
    yield s
    s.stop()


def login(server: Server) -> httpx.Client:
    """A client signed in through the login form, as a browser would be."""
    c = server.client(follow_redirects=False)
    form = c.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    r = c.post("/login", data={"csrf": csrf, "token": TOKEN, "next": "/scripts/quick_ok"})
    assert r.status_code == 303 and r.headers["location"] == "/scripts/quick_ok"
    return c


def csrf_of(c: httpx.Client) -> str:
    page = c.get("/")
    assert page.status_code == 200
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


# ---------------------------------------------------------------- binding


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.org"])
def test_a_public_bind_without_a_token_is_refused(conf, host):
    r = cli("--config-dir", str(conf), "serve", "--host", host, "--port", "0", timeout=30)
    assert_clean_error(r)
    assert "needs a token" in r.stderr


def test_loopback_addresses_need_no_token(tmp_path):
    conf = web_config(tmp_path / "conf")
    for host in ("127.0.0.2", "localhost"):
        server = Server(conf, "--host", host)
        try:
            assert server.get("/api/v1/health").status_code == 200
        finally:
            server.stop()


def test_serve_without_the_web_extra_says_what_to_install(conf):
    code = (
        "import sys; sys.modules['starlette'] = None; sys.argv[0] = 'script-monitor';"
        "from script_monitor.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, "--config-dir", str(conf), "serve", "--port", "0"],
        capture_output=True,
        text=True,
        cwd=ROOT / "src",
        timeout=30,
    )
    assert_clean_error(r)
    assert "pip install 'script-monitor[web]'" in r.stderr and "starlette" in r.stderr


def test_other_commands_never_import_the_web_libraries(conf):
    code = """
import sys
from script_monitor.cli import main
for argv in (["list"], ["list", "--json"], ["run", "quick_ok"], ["history", "quick_ok"]):
    main(["--config-dir", sys.argv[1], *argv])
web = [m for m in sys.modules if m.split(".")[0] in
       ("starlette", "uvicorn", "jinja2", "prometheus_client", "anyio", "httpx")
       or m.startswith("script_monitor.web")]
print("WEB:", web)
"""
    r = subprocess.run(
        [sys.executable, "-c", code, str(conf)],
        capture_output=True,
        text=True,
        cwd=ROOT / "src",
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "WEB: []" in r.stdout


# ---------------------------------------------------------------- the token


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/scripts",
        "/api/v1/groups",
        "/api/v1/schedules",
        "/api/v1/runs/1",
        "/api/v1/runs/1/log",
        "/api/v1/scripts/quick_ok/runs",
        "/api/v1/openapi.json",
    ],
)
def test_the_api_needs_the_token(server, path):
    # each path from its own client address: wrong tokens are counted per address
    client = {"X-Forwarded-For": f"198.51.100.{zlib.crc32(path.encode()) % 250}"}
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer not-this-one-but-the-environments"},
    ):
        r = server.get(path, headers=headers | client)
        assert r.status_code == 401, (headers, r.text)
        assert r.json() == {"error": "a valid token is required"}
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert server.get(path, token=TOKEN).status_code == 200


def test_posts_need_the_token_too(server):
    for path in ("/api/v1/scripts/quick_ok/run", "/api/v1/groups/pair/run"):
        assert server.post(path).status_code == 401
    assert server.post("/scripts/quick_ok/run").status_code == 401


def test_health_and_metrics_stay_open(server):
    assert server.get("/api/v1/health").json()["status"] == "ok"
    assert "script_monitor_runs_total" in server.get("/metrics").text


def test_metrics_auth_closes_metrics(tmp_path):
    conf = web_config(tmp_path / "conf", {"web": {"token": TOKEN, "metrics_auth": True}})
    server = Server(conf)
    try:
        assert server.get("/metrics").status_code == 401
        assert server.get("/metrics", token=TOKEN).status_code == 200
        assert server.get("/api/v1/health").status_code == 200
    finally:
        server.stop()


# ---------------------------------------------------------------- the dashboard's session


def test_the_dashboard_asks_for_the_token_once_and_keeps_a_session(server):
    with server.client(follow_redirects=False) as anonymous:
        r = anonymous.get("/scripts/quick_ok?limit=5")
        assert r.status_code == 303
        assert r.headers["location"] == "/login?next=%2Fscripts%2Fquick_ok%3Flimit%3D5"
        assert anonymous.get("/api/v1/scripts").status_code == 401
    c = login(server)
    cookie = c.cookies["sm_session"]
    set_cookie = c.get("/login").headers.get("set-cookie", "")
    assert "sm_session" not in set_cookie  # the session is kept, not replaced
    assert c.get("/").status_code == 200
    assert c.get("/api/v1/scripts").status_code == 200  # the download link works with it
    # a tampered cookie is no session at all
    body, _, sig = cookie.rpartition(".")
    forged = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1] + "." + sig
    with server.client(follow_redirects=False) as other:
        other.cookies.set("sm_session", forged)
        assert other.get("/").status_code == 303


def test_a_wrong_token_in_the_login_form_is_refused(server):
    with server.client(follow_redirects=False) as c:
        form = c.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        r = c.post("/login", data={"csrf": csrf, "token": "guess"})
        assert r.status_code == 401 and "not right" in r.text
        assert c.get("/").status_code == 303
        # and the login form itself needs its CSRF token
        r = c.post("/login", data={"token": TOKEN})
        assert r.status_code == 403


def test_login_never_sends_you_to_another_site(server):
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example", "/\r\nX: y"):
        with server.client(follow_redirects=False) as c:
            form = c.get("/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
            r = c.post("/login", data={"csrf": csrf, "token": TOKEN, "next": target})
            assert r.headers["location"] == "/"


def test_state_changes_with_the_session_cookie_need_the_csrf_token(server, conf):
    c = login(server)
    csrf = csrf_of(c)
    before = len(history(conf, "quick_ok"))
    assert c.post("/scripts/quick_ok/run").status_code == 403
    assert c.post("/scripts/quick_ok/run", data={"csrf": "wrong"}).status_code == 403
    assert c.post("/api/v1/scripts/quick_ok/run").status_code == 403
    assert c.post("/api/v1/scripts/quick_ok/run", headers={"X-CSRF-Token": "x"}).status_code == 403
    assert c.post("/logout").status_code == 403
    assert len(history(conf, "quick_ok")) == before  # nothing was started
    r = when_free(lambda: c.post("/scripts/quick_ok/run", data={"csrf": csrf}))
    newest = history(conf, "quick_ok", 1)[0]["id"]  # Run now leads to the new run
    assert r.status_code == 303 and r.headers["location"] == f"/runs/{newest}?started=1"
    r = when_free(lambda: c.post("/api/v1/scripts/quick_ok/run", headers={"X-CSRF-Token": csrf}))
    assert r.status_code == 202
    hx = {"HX-Request": "true"}
    r = when_free(lambda: c.post("/scripts/quick_ok/run", data={"csrf": csrf}, headers=hx))
    assert r.status_code == 200 and r.headers["hx-trigger"] == "sm-started"
    assert r.headers["hx-redirect"].startswith("/runs/")
    wait_for_run(conf, "quick_ok")
    assert c.post("/logout", data={"csrf": csrf}).status_code == 303
    assert c.get("/").status_code == 303  # signed out


def test_the_open_dashboards_forms_need_the_csrf_token_too(open_server):
    with open_server.client() as c:
        assert c.post("/scripts/quick_ok/run").status_code == 403
        csrf = csrf_of(c)
        assert c.post("/scripts/quick_ok/run", data={"csrf": csrf}).status_code == 303
    # an API client without cookies (curl) needs nothing more on loopback without a token
    assert when_free(lambda: open_server.post("/api/v1/scripts/quick_ok/run")).status_code == 202


# ---------------------------------------------------------------- Origin and Host


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:1"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_a_state_change_from_another_site_is_refused_token_or_not(server, headers):
    r = server.post("/api/v1/scripts/quick_ok/run", token=TOKEN, headers=headers)
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "cross-site request refused"


def test_a_state_change_from_the_servers_own_page_is_allowed(server):
    headers = {"Origin": server.url, "Sec-Fetch-Site": "same-origin"}
    assert (
        server.post("/api/v1/scripts/quick_ok/run", token=TOKEN, headers=headers).status_code == 202
    )


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:{port}",
        "127.0.0.1:1",
        "127.0.0.1.evil.example:{port}",
    ],
)
def test_a_host_that_is_not_this_server_is_refused(open_server, host):
    r = open_server.get("/api/v1/scripts", headers={"Host": host.format(port=open_server.port)})
    assert r.status_code == 403
    r = open_server.get("/", headers={"Host": host.format(port=open_server.port)})
    assert r.status_code == 403


@pytest.mark.parametrize("host", ["", "a b", "127.0.0.1:99999", "[::1"])
def test_a_host_that_is_not_a_host_name_is_a_bad_request(open_server, host):
    for path in ("/api/v1/scripts", "/"):
        assert open_server.get(path, headers={"Host": host}).status_code == 400


def test_localhost_and_the_configured_public_name_are_this_server(tmp_path):
    settings = {"web": {"allowed_hosts": ["monitor.example.com"]}}
    conf = web_config(tmp_path / "conf", settings)
    server = Server(conf)
    try:
        for host in (
            f"localhost:{server.port}",
            f"127.0.0.1:{server.port}",
            "monitor.example.com",
            "MONITOR.example.com:443",
        ):
            assert server.get("/api/v1/health", headers={"Host": host}).status_code == 200, host
        headers = {"Host": "monitor.example.com", "Origin": "https://monitor.example.com"}
        assert server.post("/api/v1/scripts/quick_ok/run", headers=headers).status_code == 202
        headers = {"Host": "monitor.example.com", "Origin": "https://other.example.com"}
        assert server.post("/api/v1/scripts/quick_ok/run", headers=headers).status_code == 403
    finally:
        server.stop()


# ---------------------------------------------------------------- escaping and paths


def test_names_descriptions_and_log_lines_are_escaped(open_server):
    run = history(open_server.config_dir, "xss_probe")[0]
    pages = [
        open_server.get(p).text
        for p in ("/", "/scripts/xss_probe", f"/runs/{run['id']}", "/groups/rest")
    ]
    for text in pages:
        assert "<script>alert" not in text and "<img src=x" not in text
        assert "onmouseover=alert" not in text.replace("onmouseover=alert(3)&gt;", "")
    assert str(escape('<script>alert("description")</script>')) in pages[1]
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[2]
    # every script element on a page is one of the dashboard's own files
    for text in pages:
        for tag in re.findall(r"<script[^>]*>", text):
            assert re.fullmatch(r'<script src="/static/[a-z.]+\.js\?v=[0-9.]+" defer>', tag), tag
    r = open_server.get("/")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"


def test_the_live_log_stream_for_the_page_is_escaped_too(open_server):
    run = history(open_server.config_dir, "xss_probe")[0]
    with open_server.client() as c:
        r = c.get(f"/runs/{run['id']}/events")
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in r.text
    assert "<script>" not in r.text and "<img" not in r.text


@pytest.mark.parametrize(
    "path",
    [
        "/static/../scripts.yaml",
        "/static/%2e%2e/scripts.yaml",
        "/static/..%2fscripts.yaml",
        "/static/README.md",
        "/static/",
        "/static/%2fetc%2fpasswd",
        "/runs/..%2f..%2fscripts.yaml",
        "/scripts/..%2fscripts.yaml",
        "/api/v1/runs/1%2f..%2f..%2fscripts.yaml/log",
    ],
)
def test_no_url_reaches_the_file_system(open_server, path):
    with httpx.Client(base_url=open_server.url) as c:
        r = c.get(path)
    assert r.status_code in (400, 404), (path, r.status_code)
    assert "scripts:" not in r.text and "root:" not in r.text


def test_the_static_files_are_shipped_in_the_package(open_server):
    for name in ("htmx.min.js", "sse.min.js", "app.js", "app.css"):
        r = open_server.get(f"/static/{name}")
        assert r.status_code == 200 and len(r.content) > 100
    assert "htmx" in open_server.get("/static/htmx.min.js").text
    r = open_server.get("/static/htmx.min.js")
    assert (
        open_server.get(
            "/static/htmx.min.js", headers={"If-None-Match": r.headers["etag"]}
        ).status_code
        == 304
    )


def test_the_child_runs_do_not_see_the_token(tmp_path, marker):
    conf = web_config(tmp_path / "conf", more={"env_dump": "env > env.txt"})
    server = Server(conf, env={"SCRIPT_MONITOR_WEB_TOKEN": TOKEN}, marker=marker)
    try:
        assert server.post("/api/v1/scripts/env_dump/run", token=TOKEN).status_code == 202
        wait_for_run(conf, "env_dump", "success")
    finally:
        server.stop()
    env = (conf / "env.txt").read_text()
    assert "SCRIPT_MONITOR_RUN_ID" in env and TOKEN not in env


def test_show_config_masks_the_token(tmp_path):
    conf = web_config(tmp_path / "conf", {"web": {"token": TOKEN}})
    r = cli("--config-dir", str(conf), "show-config", "--json")
    assert r.returncode == 0 and TOKEN not in r.stdout and '"token": "***"' in r.stdout


def test_bad_web_settings_are_config_errors(tmp_path):
    conf = web_config(tmp_path / "conf", {"web": {"port": 70000, "metrics_auth": "perhaps"}})
    r = cli("--config-dir", str(conf), "serve")
    assert_clean_error(r)
    assert "config.yaml:" in r.stderr and "web.port" in r.stderr
