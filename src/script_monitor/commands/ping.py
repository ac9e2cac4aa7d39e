"""ping and wrap: report a passive check from the command line (docs/MONITORING.md).

Both record straight into this configuration's history, or with ``--url`` send the ping
to a script-monitor server over HTTP (``POST URL/ping/NAME[/start|/fail|/CODE]``), as a
host without the configuration or the history would.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from ..errors import EXIT_OK, ScriptMonitorError, UsageError
from ..states import PingKind

BODY_LIMIT = 10 * 1024  # the last bytes of a log or of the output that are sent
HTTP_TIMEOUT = 10.0  # seconds a ping over HTTP may take
FORWARDED = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
)


class Pinger:
    """Sends the pings of one check: into the history, or to a server (``url``)."""

    def __init__(self, args: argparse.Namespace):
        self.name = args.name
        self.url = args.url
        self.config: Any = None
        self.store: Any = None
        self.check: Any = None
        if self.url is None:
            from . import load, open_store

            self.config = load(args)
            self.check = self.config.check(args.name)
            self.store = open_store(self.config)

    def send(self, kind: PingKind, exit_code: int | None = None, body: bytes = b"") -> None:
        """One ping; ScriptMonitorError when it was not accepted."""
        body = body[-BODY_LIMIT:]
        if self.url is not None:
            _http(self.url, self.name, kind, exit_code, body)
            return
        from ..pings import record_ping
        from ..redact import config_masker

        _, messages = record_ping(
            self.config,
            self.store,
            self.check,
            kind,
            exit_code,
            body,
            client=os.uname().nodename,
            masker=config_masker(self.config),
        )
        if messages:
            from ..notify import deliver

            deliver(self.config, self.store)  # at most notifications.timeout


def _path_of(name: str, kind: PingKind, exit_code: int | None) -> str:
    from urllib.parse import quote

    suffix = {PingKind.START: "/start", PingKind.FAIL: "/fail", PingKind.SUCCESS: ""}.get(
        kind, f"/{exit_code}"
    )
    return f"/ping/{quote(name, safe='')}{suffix}"


def _http(url: str, name: str, kind: PingKind, exit_code: int | None, body: bytes) -> None:
    import urllib.error
    import urllib.request

    target = url.rstrip("/") + _path_of(name, kind, exit_code)
    if not target.startswith(("http://", "https://")):
        raise UsageError(f"--url {url!r}: give an http:// or https:// URL")
    request = urllib.request.Request(
        target, data=body, method="POST", headers={"Content-Type": "text/plain"}
    )
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            response.read()
    except urllib.error.HTTPError as e:
        reason = e.read(200).decode("utf-8", "replace").strip() or e.reason
        if e.code == 404:
            raise UsageError(f"{url}: unknown check or wrong key '{name}' ({reason})") from None
        raise ScriptMonitorError(f"{url}: the ping was refused: {reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        why = getattr(e, "reason", None) or e
        raise ScriptMonitorError(f"cannot reach {url}: {why}") from None


def _read_log(path: str) -> bytes:
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - BODY_LIMIT))
                data = f.read()
    except OSError as e:
        raise UsageError(f"--log {path}: {e.strerror}") from None
    return data[-BODY_LIMIT:]


def cmd_ping(args: argparse.Namespace) -> int:
    if args.start:
        kind, code = PingKind.START, None
    elif args.fail:
        kind, code = PingKind.FAIL, None
    elif args.exit_code is not None:
        kind, code = PingKind.EXIT, args.exit_code
    else:
        kind, code = PingKind.SUCCESS, None
    body = _read_log(args.log) if args.log else b""
    Pinger(args).send(kind, code, body)
    return EXIT_OK


# ---------------------------------------------------------------- wrap


def cmd_wrap(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    elif command[:1] and command[0].startswith("-"):
        raise UsageError("wrap: give its options before NAME: wrap [--url URL] NAME -- COMMAND")
    if not command:
        raise UsageError("wrap: give the command after --, e.g. wrap NAME -- /usr/bin/backup")
    pinger = Pinger(args)  # an invalid configuration or an unknown check: nothing runs
    try:
        pinger.send(PingKind.START)
    except UsageError:  # the server knows no such check (404): a mistake, as above
        raise
    except ScriptMonitorError as e:  # out of reach, locked, refused: the job comes first
        _warn(PingKind.START, e)
    code, tail = run_relayed(command)
    _try(pinger, PingKind.EXIT, code, tail)
    return code


def _try(pinger: Pinger, kind: PingKind, code: int | None = None, body: bytes = b"") -> None:
    """A ping whose failure is told on stderr and changes nothing: the job comes first."""
    try:
        pinger.send(kind, code, body)
    except ScriptMonitorError as e:
        _warn(kind, e)


def _warn(kind: PingKind, e: Exception) -> None:
    print(f"script-monitor: wrap: the {kind} ping was not recorded: {e}", file=sys.stderr)


def run_relayed(command: list[str]) -> tuple[int, bytes]:
    """Run ``command`` in its own process group, its stdout and stderr relayed to ours,
    the signals we get forwarded to its group; return its exit code (128 + N when
    signal N ended it, 127 when it could not be started) and its output's last 10 kB."""
    import selectors
    import subprocess

    tail = bytearray()
    try:
        child = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0
        )
    except OSError as e:
        message = f"script-monitor: wrap: cannot run {command[0]}: {e.strerror}\n"
        sys.stderr.write(message)
        return (126 if isinstance(e, PermissionError) else 127), message.encode()

    def forward(signum: int, _frame: Any) -> None:
        try:
            os.killpg(child.pid, signum)
        except ProcessLookupError:
            pass

    previous = {s: signal.signal(s, forward) for s in FORWARDED}
    try:
        assert child.stdout is not None and child.stderr is not None
        outs: dict[int, Any] = {
            child.stdout.fileno(): sys.stdout,
            child.stderr.fileno(): sys.stderr,
        }
        with selectors.DefaultSelector() as sel:
            for fd in outs:
                os.set_blocking(fd, False)
                sel.register(fd, selectors.EVENT_READ)
            while outs:
                for key, _ in sel.select():
                    data = os.read(key.fd, 65536)
                    if not data:
                        sel.unregister(key.fd)
                        del outs[key.fd]
                        continue
                    _write(outs[key.fd], data)
                    tail += data
                    if len(tail) > 2 * BODY_LIMIT:
                        del tail[: len(tail) - BODY_LIMIT]
        returncode = child.wait()
        child.stdout.close()
        child.stderr.close()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    code = 128 - returncode if returncode < 0 else returncode
    return code, bytes(tail[-BODY_LIMIT:])


def _write(stream: Any, data: bytes) -> None:
    try:
        stream.buffer.write(data)
        stream.buffer.flush()
    except (OSError, ValueError):  # our own output went away: the command still runs
        pass
