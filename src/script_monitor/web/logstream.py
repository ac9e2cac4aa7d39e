"""A run's log over the web: its tail for the first view, and live Server-Sent Events.

Never reads a log whole: the tail is one ``pread`` of at most ``TAIL`` bytes, and the
stream sends chunks of at most ``CHUNK`` bytes as the client takes them.

Event format (docs/WEB.md): each event's ``id`` is the byte offset in the log just after
its data, so a client that reconnects with ``Last-Event-ID`` (or ``?offset=N``) goes
on where it stopped.  The data is the log's text (UTF-8; undecodable bytes become
U+FFFD); a chunk never ends inside a UTF-8 character, and a carriage return is sent as
a line break (SSE cannot carry a bare CR).  Joining the events' data gives the text.
A final ``event: end`` carries the run's status.

Followers of one run share a ``Watch``: one task that looks at the log's size and
the run's status, and wakes them all when either changes; so a hundred followers cost
one poll, not a hundred.  The log is a ``logsource.LogSource``: this host's file, or a
remote run's chunks in the history (read in a worker thread, looked at every
``REMOTE_EVERY`` s), with the same byte offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from markupsafe import escape

from ..logsource import FileLog, LogSource
from ..states import RunStatus
from ..store import Run

TAIL = 64 * 1024  # bytes the first view of a log shows
CHUNK = 64 * 1024  # most bytes in one event
SIZE_EVERY = 0.1  # seconds between looks at a followed log's size
REMOTE_EVERY = 0.25  # the same for a remote run's log (its worker ships every 0.5 s)
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


def tail(log: Path | LogSource, size: int = TAIL) -> dict[str, Any]:
    """The end of a log (a path, or an open ``LogSource``, local or remote): at most
    ``size`` bytes, starting at a line when it can.

    ``start`` and ``end`` are byte offsets; a live view goes on from ``end``.
    """
    source = FileLog(log) if isinstance(log, Path) else log
    try:
        total = source.size()
        start = max(0, total - size)
        data = source.read(start, total - start)
    finally:
        if source is not log:
            source.close()
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
    """The shared view of one followed run: its log (one open source for all its
    followers), the log's size and the run's status."""

    def __init__(self, run_id: int, source: LogSource, status: str, get_status: Callable):
        self.run_id = run_id
        self.source = source
        self.status = status
        self.size = -1
        self.get_status = get_status  # async () -> status
        self.followers = 0
        self.changed = asyncio.Event()
        self.task: asyncio.Task | None = None

    def _notify(self) -> None:
        old, self.changed = self.changed, asyncio.Event()
        old.set()

    async def size_now(self) -> int:
        if self.source.remote:
            return await asyncio.to_thread(self.source.size)
        return self.source.size()

    async def read(self, offset: int, n: int) -> bytes:
        if self.source.remote:
            return await asyncio.to_thread(self.source.read, offset, n)
        return self.source.read(offset, n)

    async def poll(self) -> None:
        loop = asyncio.get_running_loop()
        next_status = loop.time() + STATUS_EVERY
        every = REMOTE_EVERY if self.source.remote else SIZE_EVERY
        while self.followers > 0 and self.status == RunStatus.RUNNING:
            try:
                size = await self.size_now()
            except Exception:  # a store out of reach: try again next time
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
            await asyncio.sleep(every)


class Watches:
    """Every followed run's Watch, made when the first follower comes, gone after the last
    (which closes its log)."""

    def __init__(self) -> None:
        self.by_run: dict[int, Watch] = {}

    def join(self, run_id: int, source: LogSource, status: str, get_status: Callable) -> Watch:
        """The run's Watch; ``source`` is the caller's opened log: kept by a new Watch,
        closed here when the run already has one."""
        watch = self.by_run.get(run_id)
        if watch is None or watch.task is None or watch.task.done():
            watch = Watch(run_id, source, status, get_status)
            self.by_run[run_id] = watch
        else:
            source.close()
        watch.followers += 1
        if watch.task is None:
            watch.task = asyncio.get_running_loop().create_task(watch.poll())
        return watch

    def leave(self, watch: Watch) -> None:
        watch.followers -= 1
        if watch.followers <= 0:
            if self.by_run.get(watch.run_id) is watch:
                del self.by_run[watch.run_id]
            watch.source.close()


async def follow(
    watches: Watches,
    run: Run,
    source: LogSource,
    offset: int,
    get_status: Callable,
    html: bool = False,
    end_html: Callable[[str], str] | None = None,
) -> AsyncIterator[str]:
    """The SSE stream of a log from ``offset``: what is there, then what is written,
    until the run has ended; then ``event: end`` with its status."""
    watch = watches.join(run.id, source, run.status, get_status)
    convert = (lambda t: str(escape(t))) if html else (lambda t: t)
    try:
        yield "retry: 2000\n\n"
        pos = offset
        while True:
            changed = watch.changed
            status = watch.status  # read before the size: an ended run's log is complete
            ended = status != RunStatus.RUNNING
            if ended or watch.size < 0 or not watch.source.remote:
                size = await watch.size_now()
            else:
                size = watch.size  # a remote log: the Watch's last look (one query for all)
            while pos < size:
                data = await watch.read(pos, min(CHUNK, size - pos))
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
        watches.leave(watch)
