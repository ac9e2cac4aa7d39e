"""What a *Run now* button leads to: the new run's page, with a message saying it started.

A launch starts ``run`` or ``run-group`` as a process of its own, which records its run
a moment later; the button's request waits for that record (at most ``WAIT`` seconds)
and then sends the browser to the run's page (a script's run page, or the group run's
page) with ``?started=1``, which shows the message.  Without JavaScript that is a
POST-redirect-GET; with htmx an ``HX-Redirect``, after the message shown at once by
app.js.
"""

from __future__ import annotations

import time
from urllib.parse import quote

from markupsafe import escape

from .service import Service

WAIT = 5.0  # seconds a launch waits for its run to be recorded
POLL = 0.05
FLASH_SLOT = '<div class="notes" id="flash"></div>'


def newest(service: Service, kind: str, name: str) -> int:
    """The id of the newest run of the script or group (0 when none)."""
    if kind == "script":
        run = service.store.runs.latest_run(name)
        return run.id if run is not None else 0
    found = service.store.runs.group_history(name, 1)
    return found[0].id if found else 0


def wait_for_new(service: Service, kind: str, name: str, before: int, wait: float = WAIT) -> int:
    """The id of a run newer than ``before`` once it is recorded; 0 after ``wait`` s."""
    end = time.monotonic() + wait
    while True:
        found = newest(service, kind, name)
        if found > before or time.monotonic() >= end:
            return found if found > before else 0
        time.sleep(POLL)


def target(kind: str, name: str, run_id: int) -> str:
    """Where the browser goes after a launch: the new run, else the script's or group's page."""
    if not run_id:
        return f"/{kind}s/{quote(name, safe='')}?started=1"
    return f"/runs/{run_id}?started=1" if kind == "script" else f"/group-runs/{run_id}?started=1"


def started_message(kind: str, name: str, run_id: int | None) -> str:
    what = "group run" if kind == "group" else "run"
    text = f"Started {kind} {name}" + (f": this is its {what} #{run_id}." if run_id else ".")
    return f'<p class="flash" role="status">{escape(text)}</p>'


def with_flash(html: str, message: str) -> str:
    """A page with ``message`` in its message slot (``head.html``'s ``#flash``)."""
    return html.replace(FLASH_SLOT, f'<div class="notes" id="flash">{message}</div>', 1)
