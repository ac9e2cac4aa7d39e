"""Which channels and events apply to a run unit: its own ``notify`` over the default.

Kept apart so that both the cheap check after every run (``notify.unit_finished``) and
the events module read it without importing each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import Config


def spec_for(config: Config, kind: str, name: str) -> tuple[list[str], list[str]] | None:
    """(channels, events) for a unit: its own ``notify`` over the default; None when off.

    The group's ``notify`` applies to a group run, the script's to ``run NAME``, the
    default otherwise (``(all)``, the scheduler itself)."""
    from ..config import DEFAULT_ON, NotifySpec

    section = config.settings.notifications
    if kind == "group":
        obj: Any = config.groups.get(name)
    elif kind == "script":
        obj = config.scripts.get(name)
    elif kind == "check":
        obj = config.checks.get(name)
    else:
        obj = None
    own = getattr(obj, "notify", None)
    if own is False:
        return None
    own = own if isinstance(own, NotifySpec) else NotifySpec()
    channels = own.channels if own.channels is not None else section.default.channels
    if channels is None:
        channels = list(section.channels)
    events = own.on if own.on is not None else (section.default.on or DEFAULT_ON)
    channels = [c for c in channels if c in section.channels]
    return (channels, list(events)) if channels and events else None
