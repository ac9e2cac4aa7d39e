"""Secret values never reach a log or an output: they are replaced by ``***``."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

MASK = b"***"
MIN_SECRET = 3  # shorter values would mask ordinary output ("1", "on")
CHUNK = 1 << 16


class Masker:
    """Replaces every occurrence of a set of secret values."""

    def __init__(self, values: Iterable[str]):
        secrets = sorted(
            {v.encode() for v in values if len(v) >= MIN_SECRET}, key=len, reverse=True
        )
        self._re = re.compile(b"|".join(re.escape(s) for s in secrets)) if secrets else None
        self._keep = max((len(s) for s in secrets), default=1) - 1

    def __bool__(self) -> bool:
        return self._re is not None

    def bytes(self, data: bytes) -> bytes:
        return self._re.sub(MASK, data) if self._re else data

    def text(self, text: str | None) -> str | None:
        if text is None or self._re is None:
            return text
        return self.bytes(text.encode()).decode(errors="replace")

    def split(self, data: bytes) -> tuple[bytes, bytes]:
        """Mask what is certainly complete; hold back a tail that may start a secret."""
        assert self._re is not None
        cut = len(data) - self._keep
        if cut <= 0:
            return b"", data
        out, pos = [], 0
        for m in self._re.finditer(data):
            if m.start() >= cut:
                break
            if m.end() > cut:  # cannot happen: a match starting before cut fits in data
                cut = m.start()
                break
            out += (data[pos : m.start()], MASK)
            pos = m.end()
        out.append(data[pos:cut])
        return b"".join(out), data[max(pos, cut) :]


def pump(read_fd: int, write_fd: int, masker: Masker) -> None:
    """Copy a pipe to a file descriptor, masking secrets, until the pipe's end."""
    carry = b""
    try:
        while chunk := os.read(read_fd, CHUNK):
            done, carry = masker.split(carry + chunk)
            _write_all(write_fd, done)
        _write_all(write_fd, masker.bytes(carry))
    except OSError:
        pass  # the log became unwritable: the run's footer says so
    finally:
        os.close(read_fd)
        os.close(write_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
