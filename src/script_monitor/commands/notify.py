"""notifications, notify-test, alerts, watchdog (docs/NOTIFICATIONS.md)."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from datetime import datetime

import msgspec

from ..errors import EXIT_FAILED, EXIT_OK, UsageError
from ..serialize import alert_json, notification_json, notify_test_json
from ..states import MessageState
from ..store import NewMessage
from . import load, open_store


def cmd_notifications(args: argparse.Namespace) -> int:
    config = load(args)
    store = open_store(config)
    if args.deliver:
        from ..notify import deliver

        if not config.settings.notifications.channels:
            raise UsageError("no channel is configured (notifications.channels)")
        if not deliver(config, store, wait=True, force=True):
            print(
                "script-monitor: delivery is still going after notifications.timeout; "
                "what is not sent stays pending",
                file=sys.stderr,
            )
    notes = store.outbox.messages(args.limit)
    from ..notify.channels import masker

    mask = masker(config)
    notes = [msgspec.structs.replace(n, last_error=mask.text(n.last_error)) for n in notes]
    if args.json:
        print(json.dumps([notification_json(n) for n in notes], indent=2))
        return EXIT_OK
    if not notes:
        print("No notifications recorded")
        return EXIT_OK
    from .history import _short, _table

    fmt = config.settings.display.date_format
    rows = [
        [
            str(n.id),
            datetime.fromtimestamp(n.created).strftime(fmt),
            n.event,
            n.unit,
            n.channel,
            n.state,
            str(n.attempts),
            _short(n.last_error, 60),
        ]
        for n in notes
    ]
    headers = ["ID", "CREATED", "EVENT", "UNIT", "CHANNEL", "STATE", "TRIES", "LAST ERROR"]
    _table(args, config, headers, rows, 5)
    return EXIT_OK


def cmd_notify_test(args: argparse.Namespace) -> int:
    config = load(args)
    urls = config.settings.notifications.channels.get(args.channel)
    if urls is None:
        known = ", ".join(config.settings.notifications.channels) or "none configured"
        raise UsageError(f"unknown channel '{args.channel}' (channels: {known})")
    from ..notify import channels
    from ..notify.message import host

    env = channels.environment(config)
    mask = channels.masker(config, env)
    timeout = config.settings.notifications.timeout
    title = f"script-monitor: test message from {host()}"
    body = (
        f"This is a test of the channel '{args.channel}' of script-monitor on {host()}"
        f" ({config.root}).\nIf you read this, the channel works.\n"
    )
    results = []
    for i, raw in enumerate(urls):
        missing = channels.missing_vars(raw, env)
        why: str | None
        if missing:
            why = f"${{{missing[0]}}} is not set (environment or env_file)"
        else:
            why = _send_bounded(channels.expand(raw, env), title, body, timeout)
        results.append({"url": i + 1, "scheme": raw.partition("://")[0], "error": mask.text(why)})
    ok = all(r["error"] is None for r in results)
    store = open_store(config)
    errors = "; ".join(f"URL {r['url']}: {r['error']}" for r in results if r["error"])
    store.outbox.record_sent(
        [
            NewMessage(
                key=f"test|{datetime.now().timestamp()}|{args.channel}",
                event="test",
                unit="notify-test",
                ref="test",
                channel=args.channel,
                title=title,
                body=body,
                state=MessageState.SENT if ok else MessageState.FAILED,
                last_error=errors or None,
            )
        ]
    )
    if args.json:
        print(json.dumps(notify_test_json(args.channel, ok, results), indent=2))
    else:
        for r in results:
            state = "accepted" if r["error"] is None else f"FAILED: {r['error']}"
            print(f"{args.channel} URL {r['url']} ({r['scheme']}): {state}")
    return EXIT_OK if ok else EXIT_FAILED


def _send_bounded(url: str, title: str, body: str, timeout: float) -> str | None:
    """Send in a thread; give up waiting after ``timeout`` + 1 seconds."""
    from ..notify.channels import send_one

    out: list[str | None] = []
    thread = threading.Thread(
        target=lambda: out.append(send_one(url, title, body, "test", timeout)), daemon=True
    )
    thread.start()
    thread.join(timeout + 1)
    if not out:
        return f"no answer within {timeout:g}s (notifications.timeout)"
    return out[0]


def cmd_alerts(args: argparse.Namespace) -> int:
    config = load(args)
    if args.name is not None:
        config.script(args.name)
    store = open_store(config)
    matches = store.alerts.matches(args.name, args.limit)
    if args.json:
        print(json.dumps([alert_json(m) for m in matches], indent=2))
        return EXIT_OK
    if not matches:
        print("No output alerts recorded")
        return EXIT_OK
    from .history import _short, _table

    fmt = config.settings.display.date_format
    rows = [
        [
            datetime.fromtimestamp(m.created).strftime(fmt),
            m.script,
            str(m.run_id),
            str(m.line_number),
            m.severity + (" (fail)" if m.fail else ""),
            _short(m.line, 80),
        ]
        for m in matches
    ]
    _table(args, config, ["TIME", "SCRIPT", "RUN", "LINE", "SEVERITY", "TEXT"], rows, 4)
    return EXIT_OK


def cmd_watchdog(args: argparse.Namespace) -> int:
    from ..watchdog import check, clock_now

    config = load(args)
    store = open_store(config)
    report = check(config, store, clock_now())
    if config.settings.notifications.channels and report.new_messages:
        from ..notify import deliver

        deliver(config, store, wait=True)
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        for line in report.lines():
            print(line)
    return EXIT_FAILED if report.wrong else EXIT_OK
