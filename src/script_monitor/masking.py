"""Secret values never reach a log or an output: they are replaced by ``***``."""

from __future__ import annotations

import builtins
import os
import re
import select
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import overload

MASK = b"***"
MIN_SECRET = 3  # shorter values would mask ordinary output ("1", "on")
CHUNK = 1 << 16


def raw_bytes(value: str) -> bytes:
    """A value's bytes as a child process gets them: undecodable bytes of the
    environment come back as they were (surrogateescape); a lone surrogate, which no
    environment can hold, as its UTF-8-like form rather than an error."""
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")


class Masker:
    """Replaces every occurrence of a set of secret values."""

    def __init__(self, values: Iterable[str]):
        secrets = sorted(
            {raw_bytes(v) for v in values if len(v) >= MIN_SECRET}, key=len, reverse=True
        )
        self._re = re.compile(b"|".join(re.escape(s) for s in secrets)) if secrets else None
        self._keep = max((len(s) for s in secrets), default=1) - 1

    def __bool__(self) -> bool:
        return self._re is not None

    def bytes(self, data: bytes) -> bytes:
        return self._re.sub(MASK, data) if self._re else data

    @overload
    def text(self, text: str) -> str: ...
    @overload
    def text(self, text: None) -> None: ...
    @overload
    def text(self, text: str | None) -> str | None: ...
    def text(self, text: str | None) -> str | None:
        if text is None or self._re is None:
            return text
        return self.bytes(raw_bytes(text)).decode(errors="replace")

    def split(self, data: builtins.bytes) -> tuple[builtins.bytes, builtins.bytes]:
        """Mask what is certainly complete; hold back a tail that may start a secret."""
        assert self._re is not None
        cut = len(data) - self._keep
        if cut <= 0:
            return b"", data
        out: list[builtins.bytes] = []
        pos = 0
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


class Pump:
    """Copies a script's output pipe into its log, masking secrets, in a thread.

    When the script has exited but a background process it left still holds the pipe,
    ``finish`` hands the pipe to a small detached relay process, so the leftover keeps
    its output (masked) and is not killed by SIGPIPE when script-monitor exits.
    """

    def __init__(
        self,
        read_fd: int,
        write_fd: int,
        masker: Masker,
        secrets: list[str],
        watch: Callable[[bytes], None] | None = None,
    ):
        self.read_fd, self.write_fd = read_fd, write_fd
        self.masker, self.secrets = masker, secrets
        self.watch = watch  # sees what is logged (output alerts)
        self.carry = b""
        self.eof = False
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name="mask", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self.read_fd, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        try:
            while True:
                ready = dict(poller.poll())
                if self.read_fd in ready:
                    chunk = os.read(self.read_fd, CHUNK)
                    if not chunk:
                        self.eof = True
                        done, self.carry = self.masker.bytes(self.carry), b""
                    elif self.masker:
                        done, self.carry = self.masker.split(self.carry + chunk)
                    else:
                        done = chunk
                    _write_all(self.write_fd, done)
                    if self.watch is not None and done:
                        self.watch(done)
                    if self.eof:
                        return
                elif self._stop_r in ready:
                    return
        except OSError:
            self.eof = True  # the log became unwritable: the run's footer says so

    def finish(self, drain: float) -> None:
        """Wait up to ``drain`` seconds for the pipe's end, else hand it to a relay."""
        self._thread.join(drain)
        if self._thread.is_alive():
            os.write(self._stop_w, b"x")
            self._thread.join()
        os.close(self._stop_r)
        os.close(self._stop_w)
        if not self.eof:
            _start_relay(self.read_fd, self.write_fd, self.secrets, self.carry)
        os.close(self.read_fd)
        os.close(self.write_fd)


def _start_relay(read_fd: int, write_fd: int, secrets: list[str], carry: bytes) -> None:
    """A detached process that goes on masking the pipe into the log until its end."""
    import json

    src = str(Path(__file__).resolve().parent.parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRIPT_MONITOR_")}
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    try:
        relay = subprocess.Popen(
            [sys.executable, "-c", RELAY_CODE, str(read_fd), str(write_fd)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(read_fd, write_fd),
            start_new_session=True,
            env=env,
        )
    except OSError:
        return
    assert relay.stdin is not None
    try:
        relay.stdin.write(json.dumps({"secrets": secrets, "carry": carry.hex()}).encode())
        relay.stdin.close()
    except OSError:
        pass
    relay.returncode = 0  # detached: nobody waits for it, and Popen must not warn
    from .proc import adopt

    adopt.helpers.add(relay.pid)  # ours, not an orphan of a script


RELAY_CODE = """
import json, sys
from script_monitor.masking import Masker, relay_main
relay_main(int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.stdin.read()))
"""


def relay_main(read_fd: int, write_fd: int, state: dict) -> None:
    """The relay process: finish what the pump started."""
    masker = Masker(state["secrets"])
    carry = bytes.fromhex(state["carry"])
    while chunk := os.read(read_fd, CHUNK):
        if not masker:  # a relay for output alerts only: nothing to mask
            _write_all(write_fd, carry + chunk)
            carry = b""
            continue
        done, carry = masker.split(carry + chunk)
        _write_all(write_fd, done)
    _write_all(write_fd, masker.bytes(carry))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
