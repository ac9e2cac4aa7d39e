"""run, run-group, run-all."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import BinaryIO, cast

from ..engine import Engine, GroupResult, Reporter, RunResult, executor_for
from ..errors import EXIT_FAILED, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM
from ..proc import Interrupt, adopt
from ..render import PlainReporter, reporter_for, retry_text, single_run_line
from ..startup import settle_in
from ..states import RunStatus
from . import colors, load, open_store


@contextmanager
def interrupt_on_signals(interrupt: Interrupt) -> Iterator[None]:
    """SIGINT/SIGTERM end the running scripts' trees instead of killing us mid-record."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        interrupt.fire(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def exit_code(statuses: list[str], interrupt: Interrupt) -> int:
    if interrupt.fired:
        if interrupt.signum == signal.SIGINT:
            return EXIT_SIGINT
        signum = interrupt.signum or 0
        return EXIT_SIGTERM if signum == signal.SIGTERM else 128 + signum
    return EXIT_OK if all(s == RunStatus.SUCCESS for s in statuses) else EXIT_FAILED


def _run(
    args: argparse.Namespace,
    action: Callable[[Engine], RunResult | GroupResult],
    reporter: bool = True,
) -> int:
    config = load(args)
    if args.verb == "run":  # refuse an unknown name before the history is created or touched
        config.script(args.name)
    elif args.verb == "run-group":
        config.group(args.name)
    store = open_store(config)
    store.runs.reap_lost()
    settle_in(config.root)
    adopt.become_subreaper()  # orphaned descendants come back to us, to be ended with their run
    interrupt = Interrupt()
    rep = reporter_for(colors(args, config)) if reporter else None
    executor = executor_for(config, store, args.trigger, interrupt)
    engine = Engine(config, store, rep, args.trigger, interrupt, executor)
    with interrupt_on_signals(interrupt):
        outcome = action(engine)
    if interrupt.fired:  # more Ctrl-C while exiting must not turn exit 130 into a death by signal
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
    if isinstance(outcome, GroupResult):
        statuses = [r.status for r in outcome.results]
        _warn_log_problems(outcome.results)
    else:
        statuses = [outcome.status]
    if interrupt.fired:
        name = signal.Signals(interrupt.signum or 0).name
        print(f"script-monitor: interrupted by {name}; running scripts were ended", file=sys.stderr)
    else:  # the unit's events (docs/NOTIFICATIONS.md), then a bounded wait for delivery
        from ..notify import unit_finished

        unit = "(all)" if args.verb == "run-all" else None
        unit_finished(config, store, outcome, unit, args.trigger)
    return exit_code(statuses, interrupt)


def _warn_log_problems(results: list[RunResult]) -> None:
    """A group's plain output has no room for details: say on stderr when a log was lost."""
    for r in results:
        if r.detail and ("log not written" in r.detail or "log incomplete" in r.detail):
            print(f"script-monitor: {r.script}: {r.detail}", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    def action(engine: Engine) -> RunResult:
        engine.config.script(args.name)
        out = sys.stdout
        print(f"Running {args.name}...", flush=True)
        echo = None if args.quiet else _LastByte(out.buffer)
        engine.reporter = cast("Reporter", _Retries(args.name, echo))
        result = engine.run_script(args.name, echo=cast("BinaryIO | None", echo))
        _end_line(echo)
        print(single_run_line(result), flush=True)
        if result.detail:
            print(f"  {result.detail}", file=sys.stderr)
        return result

    return _run(args, action, reporter=False)


def _end_line(echo: _LastByte | None) -> None:
    if echo is not None and echo.last not in (b"", b"\n"):
        print()  # the output did not end its line: the closing line gets its own
        echo.last = b"\n"


class _Retries:
    """``run NAME``'s reporter: only retries are told (the rest is run's own output)."""

    def __init__(self, name: str, echo: _LastByte | None):
        self.name, self.echo = name, echo

    def script_retrying(self, result: RunResult, delay: float, attempts: int) -> None:
        _end_line(self.echo)
        print(f"Running {self.name}... {retry_text(result, delay, attempts)}", flush=True)
        print(f"Running {self.name}...", flush=True)


class _LastByte:
    """A binary writer that remembers the last byte written through it."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.last = b""

    def write(self, data: bytes) -> None:
        if data:
            self.last = data[-1:]
        self.out.write(data)

    def flush(self) -> None:
        self.out.flush()

    def fileno(self) -> int:
        return self.out.fileno()


def cmd_run_group(args: argparse.Namespace) -> int:
    return _run(args, lambda engine: engine.run_group(args.name))


def cmd_run_all(args: argparse.Namespace) -> int:
    return _run(args, lambda engine: engine.run_all())


__all__ = ["PlainReporter", "cmd_run", "cmd_run_all", "cmd_run_group"]
