"""Who wrote a row: a script-monitor process named so that a reused pid, or the same pid
after a reboot, is never taken for it (``runs.owner``, claims, leases)."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec


class Owner(msgspec.Struct, frozen=True):
    """Identifies a script-monitor process, so a reused pid is not taken for it."""

    host: str
    boot: str
    pid: int
    start: str

    def __str__(self) -> str:
        return f"{self.host}|{self.boot}|{self.pid}|{self.start}"

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        parts = text.split("|")
        if len(parts) != 4 or not parts[2].isdigit():
            return None
        return cls(parts[0], parts[1], int(parts[2]), parts[3])

    @classmethod
    def current(cls) -> Owner:
        pid = os.getpid()
        return cls(os.uname().nodename, _boot_id(), pid, _proc_start(pid) or "")

    def is_gone(self, me: Owner) -> bool:
        """True when this owner's process certainly no longer runs (same host only)."""
        if self.host != me.host:
            return False
        if self.boot != me.boot:
            return True
        return _proc_start(self.pid) != self.start


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return ""
        return ""
    fields = stat[stat.rfind(b")") + 2 :].split()
    if fields and fields[0] in (b"Z", b"X"):
        return None
    return fields[19].decode() if len(fields) > 19 else ""
