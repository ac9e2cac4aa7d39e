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
another process would send the message again: once a process waits to leave, each
send is given only the time left (its connect and read timeouts) and none starts in
the last moment; a send already under way is waited for (its own timeouts end it),
and so is the record of its answer.
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
        self.leave_at: float | None = None  # set once the process waits to leave
        self.closed = False  # the process is stopping: no send starts any more
        self.settled = threading.Event()  # clear from a send's start to its record
        self.settled.set()
        self.timeout = 10.0  # notifications.timeout
        self.record_for = 65.0  # the longest wait for a record: the store's own retries
        self.lock = threading.Lock()

    def budget(self, timeout: float) -> float | None:
        """Seconds a send may take now: ``timeout``, or less when the process leaves
        sooner; None when there is no time left to start one."""
        leave_at = self.leave_at
        if leave_at is None:
            return timeout
        left = leave_at - time.monotonic()
        return min(timeout, left) if left > LAST_MOMENT else None

    def begin_send(self, timeout: float) -> float | None:
        """A send is about to start: its budget, and it is waited for from now until
        ``end_send``; None when there is no time left to start one."""
        with self.lock:
            budget = self.budget(timeout)
            if budget is not None:
                self.settled.clear()
            return budget

    def end_send(self) -> None:
        """An attempt has ended: whatever it sent is recorded (or could not be)."""
        self.settled.set()

    def start(self, config: Config, store: Store, force: bool = False) -> None:
        """Deliver what is due (``force``: every pending message) in the background."""
        timeout = config.settings.notifications.timeout
        with self.lock:
            if not self.closed:
                self.leave_at = None
            self.deadline = max(self.deadline, time.monotonic() + timeout)
            self.timeout = timeout
            self.record_for = config.settings.store.retry_for + 5
            if self.running:
                self.again = True  # it looks once more before it ends
                return
            self.again, self.running = False, True
            self.thread = threading.Thread(
                target=self._work, args=(config, store, force), name="notify", daemon=True
            )
            self.thread.start()

    def wait(self, seconds: float | None = None, final: bool = False) -> bool:
        """Wait for the delivery to end, at most ``seconds`` (default: until the
        deadline the last ``start`` set); True when nothing is left in flight.

        A send under way when the time is up is waited for too: it was given only the
        time that was left as its connect and read timeouts, and a receiver that takes
        the message must see it recorded before the process leaves (as its runs are,
        through a store outage too), or another process would send it again.  No send
        starts after this, until the next ``start`` (with ``final``, never again)."""
        if seconds is None:
            seconds = self.deadline - time.monotonic()
        with self.lock:
            self.leave_at = time.monotonic() + max(0.0, seconds)
            self.closed = self.closed or final
        thread = self.thread
        if thread is None:
            return True
        thread.join(max(0.0, seconds))
        self.settled.wait(2 * max(0.5, self.timeout) + self.record_for)
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
        channels.load_apprise()  # before any budget is counted: it takes a while
        for note in notes:
            if COURIER.budget(settings.timeout) is None:  # the process leaves: not now
                store.outbox.release([n.id for n in notes if n.id >= note.id])
                return tried
            _attempt(config, store, note, env, mask)
            tried += 1
            last = max(last, note.id)


def _most_urls(config: Config) -> int:
    return max((len(u) for u in config.settings.notifications.channels.values()), default=1)


def _attempt(config: Config, store: Store, note: Message, env: dict, mask: Masker) -> None:
    """One delivery attempt of one claimed message to the URLs that have not taken it."""
    try:
        _try_urls(config, store, note, env, mask)
    finally:
        COURIER.end_send()


def _try_urls(config: Config, store: Store, note: Message, env: dict, mask: Masker) -> None:
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
        budget = COURIER.begin_send(settings.timeout)  # held until the record below
        if budget is None:
            errors.append(f"{name}: not tried, the process was leaving")
            continue
        why = channels.send_one(
            channels.expand(raw, env), note.title, note.body, note.event, budget
        )
        if why is None:
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
    store.outbox.finish_attempt(note.id, state, " ".join(sorted(accepted)), error, next_try)


def _warn(text: str) -> None:
    import sys

    try:
        print(f"script-monitor: {text}", file=sys.stderr)
    except (OSError, ValueError):
        pass
