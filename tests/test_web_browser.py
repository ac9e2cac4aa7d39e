"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright.

Never ``playwright install``: the browser is the system's (``.ci/run`` installs the
``chromium`` package when it is missing; ``SM_CHROMIUM`` names another binary).  Without
it these tests skip, except in CI (``CI=true``), where a missing browser is a failure.

A screenshot of every page is written to ``<pytest's base temp>/screenshots`` (and to
``$SM_SCREENSHOTS`` when set).  ``SM_DASHBOARD_PNG=docs/img/dashboard.png`` also writes
the README's picture of the dashboard over the bundled examples.
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
    page.wait_for_selector("#flash .flash", timeout=10_000)
    assert "Started script quick_ok" in page.inner_text("#flash")
    newest = page.locator("#runs tr[data-run]").first
    page.wait_for_function(
        f"() => {{ const r = document.querySelector('#runs tr[data-run]');"
        f" return r && +r.dataset.run > {before} && r.dataset.status === 'success'; }}",
        timeout=20_000,
    )
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
        page.wait_for_url("**/scripts/always_fails")
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
