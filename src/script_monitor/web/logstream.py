"""A run's log over the web: its tail for the first view, and live Server-Sent Events.

Never reads a log whole: the tail is one ``pread`` of at most ``TAIL`` bytes, and the
stream sends chunks of at most ``CHUNK`` bytes as the client takes them.

Event format (DESIGN §8): each event's ``id`` is the byte offset in the log just after
its data, so a client that reconnects with ``Last-Event-ID`` (or ``?offset=N``) goes
on where it stopped.  The data is the log's text (UTF-8; undecodable bytes become
U+FFFD); a chunk never ends inside a UTF-8 character, and a carriage return is sent as
a line break (SSE cannot carry a bare CR).  Joining the events' data gives the text.
A final ``event: end`` carries the run's status.

Followers of one run share a ``Watch``: one task that looks at the file's size and
the run's status, and wakes them all when either changes; so a hundred followers cost
one poll, not a hundred.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from markupsafe import escape

TAIL = 64 * 1024  # bytes the first view of a log shows
CHUNK = 64 * 1024  # most bytes in one event
SIZE_EVERY = 0.1  # seconds between looks at a followed log's size
STATUS_EVERY = 0.5  # seconds between looks at a followed run's status
KEEPALIVE = 15.0  # seconds of silence before a comment line keeps proxies from timing out


def utf8_cut(data: bytes) -> int:
    """How many bytes of ``data`` end on a character boundary (an incomplete UTF-8
    sequence at its end, up to 3 bytes, is held back for the next chunk)."""
    n = len(data)
    for back in range(1, min(4, n) + 1):
        byte = data[n - back]
        if byte < 0x80:
            return n
        if byte >= 0xC0:  # the lead byte of the last sequence
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return n if back >= need else n - back
    return n


def text_of(data: bytes) -> str:
    """Log bytes as display text: UTF-8 with replacements, every CR a line break."""
    text = data.decode("utf-8", "replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def tail(path: Path, size: int = TAIL) -> dict[str, Any]:
    """The end of a log: at most ``size`` bytes, starting at a line when it can.

    ``start`` and ``end`` are byte offsets; a live view goes on from ``end``.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        total = os.fstat(fd).st_size
        start = max(0, total - size)
        data = os.pread(fd, total - start, start)
    finally:
        os.close(fd)
    if start > 0:
        nl = data.find(b"\n")
        if 0 <= nl < len(data) - 1:
            data = data[nl + 1 :]
            start += nl + 1
    data = data[: utf8_cut(data)]
    if data.endswith(b"\r"):
        data = data[:-1]  # its \n may follow: the stream sends it
    return {"text": text_of(data), "start": start, "end": start + len(data), "shown": len(data)}


def sse_event(offset: int, text: str, event: str | None = None) -> str:
    """One Server-Sent Event; ``text`` may hold line breaks (one data line each)."""
    head = f"event: {event}\n" if event else ""
    if offset >= 0:
        head += f"id: {offset}\n"
    return head + "".join(f"data: {line}\n" for line in text.split("\n")) + "\n"


class Watch:
    """The shared view of one followed run: its log's size and its status."""

    def __init__(self, run_id: int, path: Path, status: str, get_status: Callable):
        self.run_id = run_id
        self.path = path
        self.status = status
        self.size = -1
        self.get_status = get_status  # async () -> status
        self.followers = 0
        self.changed = asyncio.Event()
        self.task: asyncio.Task | None = None

    def _notify(self) -> None:
        old, self.changed = self.changed, asyncio.Event()
        old.set()

    async def poll(self) -> None:
        loop = asyncio.get_running_loop()
        next_status = loop.time() + STATUS_EVERY
        while self.followers > 0 and self.status == "running":
            try:
                size = os.stat(self.path).st_size
            except OSError:
                size = self.size
            if size != self.size:
                self.size = size
                self._notify()
            if loop.time() >= next_status:
                next_status = loop.time() + STATUS_EVERY
                try:
                    status = await self.get_status()
                except Exception:  # a locked or missing store: try again next time
                    status = self.status
                if status != self.status:
                    self.status = status
                    self._notify()
            await asyncio.sleep(SIZE_EVERY)


class Watches:
    """Every followed run's Watch, made when the first follower comes, gone after the last."""

    def __init__(self) -> None:
        self.by_run: dict[int, Watch] = {}

    def join(self, run_id: int, path: Path, status: str, get_status: Callable) -> Watch:
        watch = self.by_run.get(run_id)
        if watch is None or watch.task is None or watch.task.done():
            watch = Watch(run_id, path, status, get_status)
            self.by_run[run_id] = watch
        watch.followers += 1
        if watch.task is None:
            watch.task = asyncio.get_running_loop().create_task(watch.poll())
        return watch

    def leave(self, watch: Watch) -> None:
        watch.followers -= 1
        if watch.followers <= 0 and self.by_run.get(watch.run_id) is watch:
            del self.by_run[watch.run_id]


async def follow(
    watches: Watches,
    run: dict[str, Any],
    path: Path,
    offset: int,
    get_status: Callable,
    html: bool = False,
    end_html: Callable[[str], str] | None = None,
) -> AsyncIterator[str]:
    """The SSE stream of a log from ``offset``: what is there, then what is written,
    until the run has ended; then ``event: end`` with its status."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    watch = watches.join(run["id"], path, run["status"], get_status)
    convert = (lambda t: str(escape(t))) if html else (lambda t: t)
    try:
        yield "retry: 2000\n\n"
        pos = offset
        while True:
            changed = watch.changed
            status = watch.status  # read before the size: an ended run's log is complete
            ended = status != "running"
            size = os.fstat(fd).st_size
            while pos < size:
                data = os.pread(fd, min(CHUNK, size - pos), pos)
                if not data:
                    break
                cut = len(data) if ended else utf8_cut(data)
                if not ended and cut and data[cut - 1] == 0x0D:
                    cut -= 1  # a CR whose LF may come next: send them together
                if cut == 0:
                    break
                pos += cut
                yield sse_event(pos, convert(text_of(data[:cut])))
            if ended:
                yield sse_event(-1, end_html(status) if end_html else status, "end")
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), KEEPALIVE)
                continue
            yield ": keepalive\n\n"
    finally:
        os.close(fd)
        watches.leave(watch)
