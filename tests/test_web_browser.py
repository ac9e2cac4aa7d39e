"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright.

Never ``playwright install``: the browser is the system's (``.ci/run`` installs the
``chromium`` package when it is missing; ``SM_CHROMIUM`` names another binary).  Without
it these tests skip, except in CI (``CI=true``), where a missing browser is a failure.

A screenshot of every page is written to ``<pytest's base temp>/screenshots`` (and to
``$SM_SCREENSHOTS`` when set).  ``SM_DASHBOARD_PNG=docs/img/dashboard.png`` also writes
the README's picture of the dashboard over the bundled examples, and
``SM_GROUP_RUN_PNG=docs/img/group-run.png`` its picture of a group run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import MAIN, ROOT, cli, history, wait_for
from web_helpers import TOKEN, Server, populated_config, wait_for_run, web_config

CHROMIUM = os.environ.get("SM_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STATUS_WORDS = {"success", "failed", "running", "never run", "lost", "timeout"}


def _browser_problem() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set SM_CHROMIUM)"
    return None


@pytest.fixture(scope="module")
def browser():
    problem = _browser_problem()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests cannot run in CI: {problem}")
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    d = tmp_path_factory.getbasetemp() / "screenshots"
    d.mkdir(exist_ok=True)
    return d


def snap(page, shots: Path, name: str) -> Path:
    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    extra = os.environ.get("SM_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)
    return path


@pytest.fixture(scope="module")
def conf(tmp_path_factory):
    return populated_config(tmp_path_factory.mktemp("webui") / "conf")


@pytest.fixture(scope="module")
def server(conf):
    s = Server(conf)
    yield s
    s.stop()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    pg = context.new_page()
    dialogs: list[str] = []
    errors: list[str] = []
    pg.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" else None,
    )
    pg.dialogs, pg.errors = dialogs, errors
    yield pg
    context.close()
    assert dialogs == [], f"a script ran in the page: {dialogs}"


def test_the_overview_lists_every_script_with_its_status(server, conf, page, shots):
    page.goto(server.url + "/")
    api = {s["name"]: s for s in server.get("/api/v1/scripts").json()}
    for name, script in api.items():
        row = page.locator(f"#scripts tr#script-{name}")
        assert row.count() == 1, name
        want = script["last_run"]["status"] if script["last_run"] else "never run"
        assert want in row.inner_text(), (name, row.inner_text())
    assert page.locator("#scripts tbody tr").count() == len(api)
    group = page.locator("#groups tr#group-pair")
    assert "failed" in group.inner_text()  # always_fails is in it
    assert page.locator("#groups tr#group-pair time").count() == 2  # last and next run
    snap(page, shots, "overview")
    assert page.errors == []


def test_run_now_starts_a_run_that_appears_and_finishes(server, conf, page, shots):
    page.goto(server.url + "/scripts/quick_ok")
    before = max(
        int(r)
        for r in page.locator("#runs tr[data-run]").evaluate_all(
            "rows => rows.map(r => r.dataset.run)"
        )
    )
    page.click("button.run")
    page.wait_for_url("**/runs/*?started=1", timeout=10_000)
    assert "Started script quick_ok" in page.inner_text("#flash")
    page.wait_for_selector("#status .s-success", timeout=20_000)
    page.goto(server.url + "/scripts/quick_ok")
    newest = page.locator("#runs tr[data-run]").first
    assert int(newest.get_attribute("data-run")) > before
    run = history(conf, "quick_ok", 1)[0]
    assert int(newest.get_attribute("data-run")) == run["id"]
    assert run["trigger"] == "api" and run["status"] == "success"
    assert page.locator("svg.chart rect.bar").count() == len(history(conf, "quick_ok"))
    snap(page, shots, "script")
    assert page.errors == []


def test_a_running_scripts_page_shows_new_lines_as_they_come(server, conf, page, shots, marker):
    before = history(conf, "slow_lines", 1)
    proc = subprocess.Popen(
        [sys.executable, str(MAIN), "--config-dir", str(conf), "run", "--quiet", "slow_lines"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "SM_TEST_MARKER": marker},
    )
    try:
        assert wait_for(lambda: history(conf, "slow_lines", 1) != before)
        run = history(conf, "slow_lines", 1)[0]
        page.goto(f"{server.url}/runs/{run['id']}")

        def lines() -> int:
            return page.inner_text("#log").count("\nline ")

        first = lines()
        assert "running" in page.inner_text("#status")
        page.wait_for_function(
            f"() => document.getElementById('log').innerText.split('\\nline ').length - 1"
            f" >= {first + 5}",
            timeout=10_000,
        )
        assert "running" in page.inner_text("#status")  # the lines came while it ran
        snap(page, shots, "run-live")
        page.wait_for_selector("#status .s-success", timeout=20_000)
        page.wait_for_function(
            "() => document.getElementById('log').innerText.includes('finished: success')",
            timeout=10_000,
        )
        assert lines() == 30
        text = page.inner_text("#log")
        assert text.count("line 17\n") == 1  # nothing twice, nothing missing
        page.wait_for_function(
            "() => document.getElementById('facts').innerText.includes('0')", timeout=10_000
        )
        snap(page, shots, "run-finished")
    finally:
        proc.wait(30)
    assert page.errors == []


def test_hostile_names_descriptions_and_log_lines_stay_text(server, conf, page, shots):
    run = history(conf, "xss_probe", 1)[0]
    for path in ("/", "/scripts/xss_probe", f"/runs/{run['id']}", "/groups/rest"):
        page.goto(server.url + path)
        page.wait_for_timeout(300)
        assert page.evaluate("document.querySelectorAll('img, b[onmouseover]').length") == 0
        scripts = page.evaluate("[...document.scripts].map(s => s.getAttribute('src'))")
        assert all(src and src.startswith("/static/") for src in scripts), scripts
    page.goto(f"{server.url}/runs/{run['id']}")
    assert "<img src=x onerror=alert(1)>" in page.inner_text("#log")
    page.goto(server.url + "/scripts/xss_probe")
    assert '<script>alert("description")</script>' in page.inner_text("#script .desc")
    snap(page, shots, "hostile")


def test_the_pages_read_without_javascript_and_on_a_phone(browser, server, conf, shots):
    context = browser.new_context(java_script_enabled=False, viewport={"width": 375, "height": 740})
    try:
        page = context.new_page()
        page.goto(server.url + "/")
        assert page.locator("#scripts tbody tr").count() == 5
        assert "quick_ok" in page.inner_text("#scripts")
        # no sideways scrolling on a phone
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        snap(page, shots, "overview-phone-nojs")
        run = history(conf, "always_fails", 1)[0]
        page.goto(f"{server.url}/runs/{run['id']}")
        assert "about to fail" in page.inner_text("#log")
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        # the run-now button is a plain form without JavaScript too
        page.goto(server.url + "/scripts/always_fails")
        page.click("button.run")
        page.wait_for_url("**/runs/*?started=1")
        assert "Started script always_fails" in page.inner_text("#flash")
        wait_for_run(conf, "always_fails")
        snap(page, shots, "script-phone-nojs")
    finally:
        context.close()


def test_the_dashboard_asks_for_the_token_once(browser, tmp_path, shots):
    conf = web_config(tmp_path / "conf", {"web": {"token": TOKEN}})
    cli("--config-dir", str(conf), "run", "quick_ok")
    server = Server(conf)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(server.url + "/scripts/quick_ok")
        assert page.url.startswith(server.url + "/login")
        snap(page, shots, "login")
        page.fill("#token", "wrong")
        page.click("form.login button")
        assert "not right" in page.inner_text("main")
        page.fill("#token", TOKEN)
        page.click("form.login button")
        page.wait_for_url(server.url + "/scripts/quick_ok")
        page.goto(server.url + "/")
        assert "quick_ok" in page.inner_text("#scripts")
        page.goto(server.url + "/scripts/quick_ok")
        page.click("button.run")
        page.wait_for_selector("#flash .flash")
        wait_for(lambda: len(history(conf, "quick_ok")) == 2)
    finally:
        context.close()
        server.stop()


@pytest.mark.slow
def test_the_bundled_examples_on_the_dashboard(browser, tmp_path, shots):
    """The README's picture: the examples after a few group runs."""
    conf = tmp_path / "examples"
    shutil.copytree(ROOT / "examples", conf, ignore=shutil.ignore_patterns("logs", ".script-*"))
    target = os.environ.get("SM_DASHBOARD_PNG")
    groups = ["deployment", "monitoring", "infrastructure_check", "production_deploy"]
    for group in groups * (4 if target else 1):  # a longer history for the README's picture
        cli("--config-dir", str(conf), "run-group", group)
    server = Server(conf)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.goto(server.url + "/")
        page.wait_for_timeout(500)
        assert page.locator("#scripts tbody tr").count() == len(
            server.get("/api/v1/scripts").json()
        )
        path = snap(page, shots, "examples-overview")
        if target:
            page.screenshot(path=target, full_page=False)
        page.goto(server.url + "/scripts/check_database")
        snap(page, shots, "examples-script")
        assert path.stat().st_size > 10_000
    finally:
        context.close()
        server.stop()


# ---------------------------------------------------------------- what happened, drawn

PIPELINE = {
    "fetch": {
        "command": "echo fetched; echo 'ERROR: disk nearly full'",
        "alerts": [{"pattern": "ERROR", "severity": "warning"}],
    },
    "flaky": {
        "command": "sleep 0.2; echo trying; exit 1",
        "retries": {"count": 1, "delay": 0.5, "backoff": 1},
    },
    "build": "echo build",
    "report": "echo report",
    "steady": {"command": "sleep 1; echo steady", "description": "takes a second"},
}
PAGES = ("/", "/status", "/scripts/flaky", "/groups/pipeline")


@pytest.fixture(scope="module")
def gconf(tmp_path_factory):
    """A group whose flaky member is retried once and whose dependents are skipped, and a
    notification channel that cannot be reached (its messages stay undelivered)."""
    from helpers import make_config

    conf = make_config(
        tmp_path_factory.mktemp("webgroups") / "conf",
        PIPELINE,
        [
            {
                "name": "pipeline",
                "execution": "parallel",
                "scripts": ["fetch", "flaky", "build", "report"],
                "depends_on": {"build": ["fetch", "flaky"], "report": "build"},
            }
        ],
        {
            "notifications": {
                "channels": {"ops": ["json://127.0.0.1:9/hook"]},
                "timeout": 1,
            }
        },
    )
    assert cli("--config-dir", str(conf), "run-group", "pipeline").returncode == 1
    return conf


@pytest.fixture(scope="module")
def gserver(gconf):
    s = Server(gconf)
    yield s
    s.stop()


def axe_clean(page) -> None:
    """No serious or critical accessibility violation (axe-core, bundled and offline)."""
    from axe_playwright_python.sync_playwright import Axe

    found = Axe().run(page).response["violations"]
    bad = [
        (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
        for v in found
        if v["impact"] in ("serious", "critical")
    ]
    assert bad == [], bad


def group_run_id(conf) -> int:
    import json

    r = cli("--config-dir", str(conf), "history", "--group", "pipeline", "--json")
    return json.loads(r.stdout)["id"]


def test_a_group_run_shows_each_attempt_the_skips_and_the_graph(gserver, gconf, page, shots):
    gid = group_run_id(gconf)
    page.goto(f"{gserver.url}/groups/pipeline")
    axe_clean(page)
    page.click(f"a[href='/group-runs/{gid}']")
    page.wait_for_url(f"**/group-runs/{gid}")
    flaky = page.locator("#timeline g.row[data-script=flaky] a.attempt")
    assert flaky.count() == 2
    assert [flaky.nth(i).get_attribute("data-attempt") for i in range(2)] == ["1", "2"]
    assert page.locator("#timeline line.wait").count() == 1  # the retry's wait, a gap
    skips = page.locator("#timeline text.skip").evaluate_all(
        "els => els.map(e => e.firstChild.textContent)"
    )
    assert skips == ["⊘ skipped: needs flaky", "⊘ skipped: needs build"]
    assert page.locator("#timeline text.tick").count() >= 2
    assert page.locator("#graph g.node").count() == 4  # one node per script
    edges = page.locator("#graph path.edge")
    assert edges.count() == 3  # one edge per dependency
    assert "✗ failed" in page.locator("#graph g.node[data-script=flaky]").text_content()
    assert page.locator("#attempts tr[data-script=flaky]").count() == 2
    snap(page, shots, "group-run")
    target = os.environ.get("SM_GROUP_RUN_PNG")
    if target:
        page.set_viewport_size({"width": 1000, "height": 800})
        page.locator("#grouprun").screenshot(path=target, scale="css")
    axe_clean(page)
    assert page.errors == []


def test_run_now_says_so_and_goes_to_the_run_seen_running_then_finished(
    gserver, gconf, page, shots
):
    before = max([r["id"] for r in history(gconf, "steady", 1)], default=0)
    page.goto(f"{gserver.url}/scripts/steady")
    page.click("button.run")
    page.wait_for_selector("#flash .flash", timeout=5_000)  # at once, before the answer
    page.wait_for_url("**/runs/*?started=1", timeout=10_000)
    run_id = int(page.url.split("/runs/")[1].split("?")[0])
    assert run_id > before
    assert f"Started script steady: this is its run #{run_id}." in page.inner_text("#flash")
    assert "running" in page.inner_text("#status")
    page.wait_for_selector("#status .s-success", timeout=20_000)
    snap(page, shots, "run-now-finished")
    axe_clean(page)
    run = history(gconf, "steady", 1)[0]
    assert (run["id"], run["trigger"], run["status"]) == (run_id, "api", "success")
    # a group: to its group run's page, which grows while the group runs
    page.goto(f"{gserver.url}/groups/pipeline")
    page.click("button.run")
    page.wait_for_url("**/group-runs/*?started=1", timeout=10_000)
    assert "Started group pipeline" in page.inner_text("#flash")
    page.wait_for_selector("#grouprun[data-status=failed]", timeout=20_000)
    assert page.locator("#timeline a.attempt").count() == 3
    # refused while it runs (overlap): said on the page, no run started
    page.goto(f"{gserver.url}/scripts/steady")
    page.click("button.run")
    page.wait_for_url("**/runs/*?started=1", timeout=10_000)
    page.goto(f"{gserver.url}/scripts/steady")
    page.click("button.run")
    page.wait_for_selector("#flash .flash.bad", timeout=5_000)
    assert "already running" in page.inner_text("#flash")
    wait_for_run(gconf, "steady", "success")
    assert page.errors == [] or all("409" in e for e in page.errors)


def test_the_duration_chart_has_labelled_axes(gserver, page, shots):
    page.goto(f"{gserver.url}/scripts/flaky")
    chart = page.locator("svg.chart")
    assert chart.locator("text.tick.y").count() >= 2
    assert all(t.strip() for t in chart.locator("text.tick.x").all_text_contents())
    assert chart.locator("text.tick.y").first.text_content() == "0s"
    assert chart.locator("text.mark").count() == chart.locator("rect.bar").count()  # all ✗
    assert "failed" in chart.locator("rect.bar title").first.text_content()
    axe_clean(page)


def test_the_status_page_lists_the_undelivered_notification(gserver, page, shots):
    page.goto(f"{gserver.url}/status")
    rows = page.locator("#outbox tbody tr[data-state]")
    assert rows.count() >= 1
    assert "ops" in rows.first.inner_text() and "failure" in rows.first.inner_text()
    assert "ERROR: disk nearly full" in page.inner_text("#alerts")
    assert "flaky" in page.inner_text("#failures")
    page.fill("#f-failures", "no-such-script")  # each list narrows as one types
    assert page.locator("#failures tbody tr:visible").count() == 0
    snap(page, shots, "status")
    axe_clean(page)


def test_the_filter_narrows_the_overview(gserver, page, shots):
    page.goto(gserver.url + "/")
    assert page.locator("#scripts tbody tr").count() == 5
    page.fill("#find-q", "stead")
    page.wait_for_function(
        "() => document.querySelectorAll('#scripts tbody tr').length === 1", timeout=5_000
    )
    assert page.locator("#scripts tr#script-steady").count() == 1
    assert "q=stead" in page.url
    page.select_option("#find-status", "failing")
    page.fill("#find-q", "")
    page.wait_for_function(
        "() => document.querySelectorAll('#scripts tbody tr').length === 1"
        " && !!document.getElementById('script-flaky')",
        timeout=5_000,
    )
    axe_clean(page)


def test_every_page_fits_a_phone_and_reads_without_javascript(browser, gserver, gconf, shots):
    context = browser.new_context(
        java_script_enabled=False, viewport={"width": 390, "height": 844}, color_scheme="dark"
    )
    try:
        page = context.new_page()
        gid = group_run_id(gconf)
        run = history(gconf, "flaky", 1)[0]["id"]
        for path in (*PAGES, f"/group-runs/{gid}", f"/runs/{run}"):
            page.goto(gserver.url + path)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, (path, width)
        snap(page, shots, "run-phone-dark")
        page.goto(gserver.url + "/?q=stead")  # the filter is a plain GET form
        assert page.locator("#scripts tbody tr").count() == 1
        page.goto(gserver.url + "/")
        page.fill("#find-q", "fetch")
        page.click("#find button[type=submit]")
        page.wait_for_url("**/?q=fetch*")
        assert page.locator("#scripts tbody tr").count() == 1
        page.goto(gserver.url + "/scripts/steady")  # Run now: a redirect to the new run
        page.click("button.run")
        page.wait_for_url("**/runs/*?started=1", timeout=10_000)
        assert "Started script steady" in page.inner_text("#flash")
        wait_for_run(gconf, "steady", "success")
    finally:
        context.close()
