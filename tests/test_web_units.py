"""The web server's pure parts, each against a plain definition: UTF-8 cuts and SSE
framing, Host/Origin checks and session cookies, and the metrics' running totals
against a full count of a real SQLite history."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from script_monitor.store import RunEnd, Store
from script_monitor.tokens import Identity, Token, resolve
from script_monitor.web import logstream
from script_monitor.web.metrics import BUCKETS, ScriptSeries, StoreCollector
from script_monitor.web.security import Security, Throttle, is_loopback


def parse_data(event: str) -> str:
    """The data of one SSE event, as the specification joins it."""
    lines = [ln for ln in event.split("\n") if ln.startswith("data:")]
    return "\n".join(ln[6:] if ln.startswith("data: ") else ln[5:] for ln in lines)


@given(st.binary(max_size=64), st.integers(min_value=0, max_value=64))
def test_a_cut_never_splits_a_character_and_keeps_what_is_whole(data, at):
    head = data[:at]
    cut = logstream.utf8_cut(head)
    assert 0 <= len(head) - cut <= 3
    text = data.decode("utf-8", "replace")
    if "\ufffd" not in text:  # valid UTF-8: the parts decode on their own
        head[:cut].decode()
        (head[cut:] + data[at:]).decode()


@given(st.text(alphabet=st.characters(blacklist_characters="\r", codec="utf-8")))
def test_an_events_data_is_its_text(text):
    assert parse_data(logstream.sse_event(5, text)) == text


PIECES = [b"\r", b"\n", b"a", b"\xc3\xa9", b"\xe2", b"\x82\xac", b"\xff", b"\xf0\x9f"]
LOG_CHUNKS = st.lists(
    st.one_of(st.binary(max_size=20), st.lists(st.sampled_from(PIECES)).map(b"".join)),
    max_size=8,
)


@settings(max_examples=300)
@given(LOG_CHUNKS)
@example([b"a\r", b"\nb"])
@example([b"caf\xc3", b"\xa9 \xe2\x82", b"\xac"])
def test_joined_events_rebuild_the_text_with_crs_as_line_breaks(chunks):
    # what follow() does: cut each chunk at a character boundary, carry the rest over
    data, carry, out = b"".join(chunks), b"", []
    for chunk in chunks:
        chunk = carry + chunk
        cut = logstream.utf8_cut(chunk)
        if cut and chunk[cut - 1] == 0x0D:
            cut -= 1
        out.append(parse_data(logstream.sse_event(0, logstream.text_of(chunk[:cut]))))
        carry = chunk[cut:]
    out.append(logstream.text_of(carry))
    assert "".join(out) == logstream.text_of(data)


def test_the_tail_starts_at_a_line_and_ends_at_a_character(tmp_path):
    log = tmp_path / "x.log"
    log.write_bytes(b"first line\n" + b"x" * 100 + b"\nlast \xc3\xa9 line\n\xe2\x82")
    t = logstream.tail(log, 30)
    assert t["text"] == "last é line\n"
    assert t["end"] == log.stat().st_size - 2  # the half euro sign waits for its end
    assert t["start"] == t["end"] - len("last é line\n".encode())
    assert logstream.tail(log)["start"] == 0


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("localhost.example.org", False),
        ("", False),
    ],
)
def test_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_the_environments_token_wins(tmp_path):
    from helpers import make_config
    from script_monitor.config import load_config

    conf = make_config(tmp_path / "c", {"a": "true"}, settings={"web": {"token": "  a  "}})
    config = load_config(conf)
    admin = Identity("admin", "admin")
    assert resolve(config, {"SCRIPT_MONITOR_WEB_TOKEN": "b"})[0][:2] == (admin, "b")
    assert resolve(config, {})[0][:2] == (admin, "a")  # stripped
    assert resolve(config, {"SCRIPT_MONITOR_WEB_TOKEN": ""}) == []
    assert resolve(config, {"SCRIPT_MONITOR_WEB_TOKEN": "   "}) == []


def security(tmp_path: Path, host: str = "127.0.0.1", **kw) -> Security:
    args = {"token": "t" * 20, "metrics_auth": False, "allowed_hosts": [], **kw}
    tokens = [Token(Identity("admin", "admin"), args["token"], "config.yaml")]
    return Security(host, 8787, tokens, args["metrics_auth"], args["allowed_hosts"], tmp_path)


def test_failed_tokens_block_an_address_for_a_minute():
    now = [0.0]
    throttle = Throttle(clock=lambda: now[0])
    starts = [throttle.fail("10.0.0.1") for _ in range(10)]
    assert starts == [False] * 9 + [True]  # the block is reported once
    assert throttle.retry_after("10.0.0.1") == 60 and throttle.retry_after("10.0.0.2") == 0
    now[0] = 61.0
    assert throttle.retry_after("10.0.0.1") == 0
    for _ in range(9):  # failures spread over more than a minute never block
        now[0] += 7
        assert not throttle.fail("10.0.0.1")
    now[0] += 7  # the first of them is now more than a minute old
    assert not throttle.fail("10.0.0.1")


def test_hosts(tmp_path):
    sec = security(tmp_path, allowed_hosts=["monitor.example.com", "other.example:8443"])
    ok = [
        "127.0.0.1:8787",
        "localhost:8787",
        "[::1]:8787",
        "monitor.example.com",
        "monitor.example.com:1234",
        "other.example:8443",
    ]
    bad = [
        "127.0.0.1",
        "127.0.0.1:8788",
        "evil.example:8787",
        "other.example",
        "127.0.0.1:8787@evil",
        "127.0.0.1:8787/x",
        "[::1",
        "a:b:c:d",
        "",
        None,
        "localhost:99999",
    ]
    assert all(sec.host_ok(h) for h in ok)
    assert not any(sec.host_ok(h) for h in bad)
    wild = security(tmp_path, host="0.0.0.0")
    assert wild.host_ok("192.0.2.7:8787") and wild.host_ok("[2001:db8::1]:8787")
    assert not wild.host_ok("rebind.evil.example:8787")


def test_origins(tmp_path):
    sec = security(tmp_path, allowed_hosts=["monitor.example.com"])
    host = "127.0.0.1:8787"
    assert sec.origin_ok(None, None, host)  # curl
    assert sec.origin_ok("http://127.0.0.1:8787", "same-origin", host)
    assert sec.origin_ok("https://monitor.example.com", None, "127.0.0.1:8787")
    assert sec.origin_ok(None, "none", host)  # typed into the address bar
    for origin, site in (
        ("http://evil.example", None),
        ("null", None),
        ("http://127.0.0.1:8787.evil", None),
        ("file://", None),
        (None, "cross-site"),
        (None, "same-site"),
    ):
        assert not sec.origin_ok(origin, site, host), (origin, site)


def test_sessions_are_signed_and_tied_to_the_token(tmp_path):
    sec = security(tmp_path)
    session = sec.new_session("t" * 20)
    cookie = sec.encode(session)
    assert sec.decode(cookie) == session and sec.authed(sec.decode(cookie))
    body, _, sig = cookie.rpartition(".")
    for bad in (cookie + "x", body + "." + sig[::-1], "x." + sig, "", "no-dot", "a" * 5000):
        assert sec.decode(bad) is None
    again = security(tmp_path)  # the same state folder: the same key, sessions survive
    assert again.authed(again.decode(cookie))
    other = security(tmp_path, token="u" * 20)  # another token: the session is void
    assert other.decode(cookie) is not None and not other.authed(other.decode(cookie))
    old = dict(session, t=int(time.time()) - 8 * 86400)
    assert sec.decode(sec.encode(old)) is None
    assert (tmp_path / "web-session.key").stat().st_mode & 0o077 == 0
    assert sec.csrf_ok(session, session["csrf"]) and not sec.csrf_ok(session, "x")
    assert not sec.csrf_ok(None, session["csrf"])


# ---------------------------------------------------------------- metrics totals

SCRIPTS = ["a", "b", "c"]
FINAL = ["success", "failed", "timeout", "interrupted", "lost"]
ops = st.lists(
    st.one_of(
        st.tuples(st.just("start"), st.sampled_from(SCRIPTS)),
        st.tuples(
            st.just("finish"), st.integers(0, 20), st.sampled_from(FINAL), st.floats(0, 20000)
        ),
        st.tuples(st.just("skip"), st.sampled_from(SCRIPTS)),
        st.tuples(st.just("scrape")),
    ),
    max_size=40,
)


def full_count(path: Path) -> dict:
    db = sqlite3.connect(path)
    counts = dict(
        ((s, st_), n)
        for s, st_, n in db.execute(
            "SELECT script, status, COUNT(*) FROM runs WHERE status != 'running'"
            " GROUP BY script, status"
        )
    )
    timed = dict(
        db.execute(
            "SELECT script, COUNT(*) FROM runs WHERE status IN"
            " ('success', 'failed', 'timeout', 'interrupted') GROUP BY script"
        ).fetchall()
    )
    running = dict(
        db.execute(
            "SELECT script, COUNT(*) FROM runs WHERE status = 'running' GROUP BY script"
        ).fetchall()
    )
    db.close()
    return {"counts": counts, "timed": timed, "running": running}


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops)
def test_the_running_totals_equal_a_full_count_at_every_scrape(tmp_path_factory, steps):
    state = tmp_path_factory.mktemp("totals")
    store = Store(state)
    service = SimpleNamespace(store=store, config=SimpleNamespace(scripts=dict.fromkeys(SCRIPTS)))
    collector = StoreCollector(service)  # type: ignore[arg-type]
    running: list[int] = []
    for step in [*steps, ("scrape",)]:
        if step[0] == "start":
            running.append(store.runs.start_run(step[1], "manual", time.time()))
        elif step[0] == "finish" and running:
            run_id = running.pop(step[1] % len(running))
            store.runs.finish_run(run_id, RunEnd(step[2], time.time(), step[3]))
        elif step[0] == "skip":
            store.runs.add_skipped([step[1]], "manual")
        elif step[0] == "scrape":
            collector.update()
            want = full_count(store.path)
            t = collector.totals
            assert {k: v for k, v in t.counts.items() if v} == want["counts"]
            assert {k: v for k, v in t.timed.items() if v} == want["timed"]
            live: dict[str, int] = {}
            for script in t.watched.values():
                live[script] = live.get(script, 0) + 1
            assert live == want["running"]
            for script, counts in t.buckets.items():
                assert counts == sorted(counts) and counts[-1] <= t.timed[script]
            # the text kept per script and re-rendered for the changed ones only is
            # the text rendered afresh from the same totals
            text = collector.series.render(t, list(SCRIPTS))
            assert text == ScriptSeries().render(t, list(SCRIPTS))
            families = {f.name: f for f in text_string_to_metric_families(text)}
            runs = families["script_monitor_runs"].samples
            assert {(x.labels["script"], x.labels["status"]): x.value for x in runs if x.value} == {
                k: v for k, v in t.counts.items() if v
            }
    assert len(BUCKETS) >= 10
    store.close()
