"""The outbox: every message is recorded before it is sent, then delivered off the
critical path, retried with backoff for up to a day, and never sent twice.

A message is one row per (event, run unit, channel).  Delivery claims rows in a
``BEGIN IMMEDIATE`` transaction (``Store.claim_notifications``), so two processes
never send the same row; each URL of the channel that accepted it is remembered,
and a retry goes only to the others.  Sending happens on one daemon thread per
process; a command waits for it at most ``notifications.timeout`` seconds and then
exits, leaving what is not sent ``pending`` (its claim dies with the process).  (Not
in an atexit handler: at interpreter shutdown Apprise's HTTP stack cannot start.)

Leaving must never cut a send between the receiver's acceptance and its record, or
another process would send the message again: once a command waits to leave, each
send is given only the time left (its connect and read timeouts), none starts in the
last moment, and an acceptance being recorded is waited for.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from ..states import MessageState

if TYPE_CHECKING:
    from ..config import Config
    from ..masking import Masker
    from ..store import Message, Store

GIVE_UP = 24 * 3600.0  # a message not delivered within a day is marked failed
FIRST_RETRY = 30.0  # seconds; doubled after each failed attempt
MAX_RETRY = 3600.0


def backoff(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failed attempts."""
    return min(MAX_RETRY, FIRST_RETRY * 2 ** max(0, attempts - 1))


LAST_MOMENT = 0.2  # seconds before a leaving command's exit when no send starts


class Courier:
    """The delivery thread of this process (at most one at a time)."""

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None  # the newest delivery thread
        self.running = False  # it has not decided to end yet
        self.again = False
        self.deadline = 0.0
        self.leave_at: float | None = None  # set while a command waits to exit
        self.recorded = threading.Event()  # clear while an acceptance is being recorded
        self.recorded.set()
        self.record_for = 65.0  # its longest wait: the store's own retries, and a margin
        self.lock = threading.Lock()

    def budget(self, timeout: float) -> float | None:
        """Seconds a send may take now: ``timeout``, or less when the command leaves
        sooner; None when there is no time left to start one."""
        leave_at = self.leave_at
        if leave_at is None:
            return timeout
        left = leave_at - time.monotonic()
        return min(timeout, left) if left > LAST_MOMENT else None

    def start(self, config: Config, store: Store, force: bool = False) -> None:
        """Deliver what is due (``force``: every pending message) in the background."""
        timeout = config.settings.notifications.timeout
        with self.lock:
            self.deadline = max(self.deadline, time.monotonic() + timeout)
            self.record_for = config.settings.store.retry_for + 5
            if self.running:
                self.again = True  # it looks once more before it ends
                return
            self.again, self.running = False, True
            self.thread = threading.Thread(
                target=self._work, args=(config, store, force), name="notify", daemon=True
            )
            self.thread.start()

    def wait(self, seconds: float | None = None) -> bool:
        """Wait for the delivery to end, at most ``seconds`` (default: until the
        deadline the last ``start`` set); True when nothing is left in flight."""
        thread = self.thread
        if thread is None:
            return True
        if seconds is None:
            seconds = self.deadline - time.monotonic()
        self.leave_at = time.monotonic() + max(0.0, seconds)
        try:
            thread.join(max(0.0, seconds))
            # An accepted message is recorded before the command leaves, as its runs
            # are (through a store outage too), or another process would send it again.
            self.recorded.wait(self.record_for)
        finally:
            self.leave_at = None
        return not thread.is_alive()

    def _work(self, config: Config, store: Store, force: bool) -> None:
        try:
            while True:
                deliver_due(config, store, force)
                with self.lock:
                    if not self.again:
                        self.running = False
                        return
                    self.again = False
                force = False
        except Exception as e:  # never a traceback from a background thread
            with self.lock:
                self.running = False
            _warn(f"notifications: delivery stopped: {e}")


COURIER = Courier()


def deliver_due(config: Config, store: Store, force: bool = False) -> int:
    """Claim and send every due message, batch by batch; return how many were tried."""
    from . import channels

    settings = config.settings.notifications
    env = channels.environment(config)
    mask = channels.masker(config, env)
    tried, last = 0, 0
    while True:
        lease = 120 + 4 * settings.timeout * max(1, _most_urls(config))
        notes = store.outbox.claim(time.time(), lease, force=force, after=last)
        if not notes:
            return tried
        for note in notes:
            if COURIER.budget(settings.timeout) is None:  # the command leaves: not now
                store.outbox.release([n.id for n in notes if n.id >= note.id])
                return tried
            _attempt(config, store, note, env, mask)
            tried += 1
            last = max(last, note.id)


def _most_urls(config: Config) -> int:
    return max((len(u) for u in config.settings.notifications.channels.values()), default=1)


def _attempt(config: Config, store: Store, note: Message, env: dict, mask: Masker) -> None:
    """One delivery attempt of one claimed message to the URLs that have not taken it."""
    from . import channels

    settings = config.settings.notifications
    urls = settings.channels.get(note.channel)
    accepted = set(note.accepted.split())
    errors = []
    if urls is None:
        errors.append(f"channel '{note.channel}' is no longer configured")
        urls = []
    for i, raw in enumerate(urls):
        uid = channels.url_id(raw)
        if uid in accepted:
            continue
        name = f"{note.channel} URL {i + 1} ({raw.partition('://')[0]})"
        missing = channels.missing_vars(raw, env)
        if missing:
            errors.append(f"{name}: ${{{missing[0]}}} is not set")
            continue
        budget = COURIER.budget(settings.timeout)
        if budget is None:
            errors.append(f"{name}: not tried, the command was leaving")
            continue
        why = channels.send_one(
            channels.expand(raw, env), note.title, note.body, note.event, budget
        )
        if why is None:
            COURIER.recorded.clear()  # until finish_attempt below has recorded it
            accepted.add(uid)
        else:
            errors.append(f"{name}: {why}")
    done = bool(urls) and all(channels.url_id(u) in accepted for u in urls)
    attempts = note.attempts + 1
    if done:
        state, next_try = MessageState.SENT, note.next_try
    elif time.time() - note.created >= GIVE_UP:
        state, next_try = MessageState.FAILED, note.next_try
    else:
        state, next_try = MessageState.PENDING, time.time() + backoff(attempts)
    error = mask.text("; ".join(errors))[:2000] if errors else None
    try:
        store.outbox.finish_attempt(note.id, state, " ".join(sorted(accepted)), error, next_try)
    finally:
        COURIER.recorded.set()


def _warn(text: str) -> None:
    import sys

    try:
        print(f"script-monitor: {text}", file=sys.stderr)
    except (OSError, ValueError):
        pass
