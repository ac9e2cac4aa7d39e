"""The command line: parse arguments, call a command, map errors to exit codes.

No logic lives here.  Command modules are imported only when their verb is used,
so ``--help`` and quick commands start fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__, startup

startup.plain_argparse_texts()

# verb -> (module in commands/, help)
VERBS = {
    "run": ("run", "run one script; its output streams to the terminal and its log"),
    "run-group": ("run", "run a group in its configured mode"),
    "run-all": ("run", "run every script, serially, in declaration order"),
    "list": ("history", "every script with its last status, run time and duration"),
    "list-groups": ("groups", "every group with its mode, scripts, schedule and last run"),
    "graph": ("graph", "a group's dependency graph (text, dot or mermaid)"),
    "history": ("history", "a script's runs, newest first"),
    "logs": ("history", "the newest run's log of a script (or --run ID)"),
    "clear-logs": ("history", "delete a script's log files (history rows stay)"),
    "clear-all-logs": ("history", "delete every log file (history rows stay)"),
    "validate": ("configure", "check every configuration file and print every problem"),
    "show-config": ("configure", "print the effective configuration"),
    "get-setting": ("configure", "print the effective value of a dotted setting"),
    "init": ("configure", "write a commented example configuration"),
    "scheduler": ("schedule", "run the built-in scheduler in the foreground"),
    "list-schedules": ("schedule", "scheduled groups with their next run"),
    "export-systemd": ("schedule", "print (or write) a systemd .service and .timer for a group"),
    "export-cron": ("schedule", "print (or write) a crontab line for a group"),
    "status": ("status", "what is going on now; exit 1 if a scheduled run failed"),
    "completion": ("completion", "print a shell completion script (bash, zsh or fish)"),
    "serve": ("serve", "serve the web dashboard, the JSON API and Prometheus metrics"),
    "audit": ("audit", "the web server's audit trail: launches, sign-ins and refusals"),
    "store": ("store", "migrate the history's schema, copy it to another store, or prune it"),
    "worker": ("worker", "run scripts sent by run/run-group/the scheduler (execution: celery)"),
    "notifications": ("notify", "recent notification messages, newest first"),
    "notify-test": ("notify", "send a test message through a channel"),
    "alerts": ("notify", "output alerts that matched, newest first"),
    "watchdog": ("notify", "check for missed ticks, overdue runs and a dead scheduler"),
    "schema": ("schema", "print the JSON Schema of a configuration file, for editors"),
    "ping": ("ping", "report a passive check's start, success, failure or exit code"),
    "wrap": ("ping", "run a command and report it to a passive check (start, exit code, output)"),
}
HIDDEN = {"__complete": ("completion", "names for the completion scripts")}  # not in --help
PAGED = ("history", "logs")  # through $PAGER on a terminal, unless --no-pager
TOP = ""  # build_parser(TOP): every verb's name and help, none of their arguments


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; with ``only``, just that verb's sub-parser is built
    (with ``TOP``, every verb without its arguments: the top-level ``--help``).

    A command run every minute by cron only ever needs its own (``startup.OnlyOneVerb``).
    """
    parser = argparse.ArgumentParser(
        prog="script-monitor",
        description="Run, schedule and monitor scripts and groups of scripts declared in YAML.",
    )
    parser.add_argument("--version", action="version", version=f"script-monitor {__version__}")
    parser.add_argument(
        "--config-dir",
        metavar="DIR",
        help="configuration directory (default: $SCRIPT_MONITOR_HOME, else the current directory)",
    )
    parser.add_argument("--no-color", action="store_true", help="never use colours")
    parser.add_argument("--no-pager", action="store_true", help="never page long output")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND", required=True)
    p = startup.OnlyOneVerb() if only is not None else {}
    for verb, (_, text) in VERBS.items():
        if only in (None, TOP, verb):
            verb_parser = sub.add_parser(verb, help=text, description=text)
            if only != TOP:
                p[verb] = verb_parser
    if only in HIDDEN:
        sub.add_parser(only).add_argument("kind", choices=("scripts", "groups", "checks"))

    p["run"].add_argument("name", help="script name")
    p["run"].add_argument("-q", "--quiet", action="store_true", help="do not echo the output")
    p["run-group"].add_argument("name", help="group name")
    for verb in ("run", "run-group", "run-all"):
        p[verb].add_argument(
            "--trigger",
            choices=("manual", "schedule", "api"),
            default="manual",
            help="how the run is recorded (exported timers and crontab lines say schedule)",
        )
    for verb in (
        *("list", "list-groups", "history", "show-config", "list-schedules", "status"),
        *("notifications", "notify-test", "alerts", "watchdog"),
    ):
        p[verb].add_argument("--json", action="store_true", help="machine-readable output")
    p["graph"].add_argument("name", help="group name")
    p["graph"].add_argument(
        "--format", choices=("text", "dot", "mermaid"), default="text", help="default: text"
    )
    for verb in PAGED:
        p[verb].add_argument(
            "--no-pager", action="store_true", default=argparse.SUPPRESS, help="never page"
        )
    p["completion"].add_argument("shell", choices=("bash", "zsh", "fish"), help="the shell")
    # The completion scripts are generated from the whole command line: handed over
    # here, so that nothing imports this module back.
    p["completion"].set_defaults(command_line=build_parser)
    for verb in ("notifications", "alerts"):
        p[verb].add_argument(
            "-n", "--limit", type=_positive, default=20, help="show at most N (default 20)"
        )
    p["notifications"].add_argument(
        "--deliver", action="store_true", help="send every pending message now (no backoff)"
    )
    p["notify-test"].add_argument("channel", help="channel name (notifications.channels)")
    p["alerts"].add_argument("name", nargs="?", help="script name (default: every script)")
    p["history"].add_argument("name", nargs="?", help="script name")
    p["history"].add_argument(
        "--group", metavar="NAME", help="the newest run of group NAME: every attempt, skips, edges"
    )
    p["history"].add_argument(
        "-n", "--limit", type=_positive, default=20, help="show at most N runs (default 20)"
    )
    p["history"].add_argument(
        "--summary",
        action="store_true",
        help="with --json: an object with the runs and a summary (the band of usual durations)",
    )
    p["logs"].add_argument("name", help="script name")
    p["logs"].add_argument("--run", type=_positive, metavar="ID", help="a run id from history")
    p["logs"].add_argument(
        "-f", "--follow", action="store_true", help="keep printing while the run goes on"
    )
    p["logs"].add_argument(
        "--raw", action="store_true", help="print the bytes as stored (no UTF-8 repair)"
    )
    p["clear-logs"].add_argument("name", help="script name")
    p["get-setting"].add_argument("key", help="dotted key, e.g. execution.max_parallel_workers")
    p["init"].add_argument("directory", nargs="?", help="where to write (default: config dir)")
    p["scheduler"].add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    for verb in ("export-systemd", "export-cron"):
        p[verb].add_argument("group", help="group name")
        p[verb].add_argument("--output", metavar="DIR", help="write files into DIR")
    p["export-systemd"].add_argument("--user", action="store_true", help="a user unit")
    p["serve"].add_argument("--host", help="address to listen on (default web.host, 127.0.0.1)")
    p["serve"].add_argument(
        "--port", type=_port, help="port to listen on (default web.port, 8787; 0 = any free)"
    )
    p["schema"].add_argument(
        "kind", choices=("scripts", "groups", "config", "checks"), help="which file's schema"
    )
    p["serve"].add_argument(
        "--socket", metavar="PATH", help="listen on a unix socket (mode 0600) instead of TCP"
    )
    p["audit"].add_argument("--json", action="store_true", help="machine-readable output")
    p["audit"].add_argument(
        "--since", metavar="WHEN", help="only rows since WHEN: 30m, 12h, 7d or an ISO date"
    )
    p["audit"].add_argument(
        "-n", "--limit", type=_positive, default=100, help="show at most N rows (default 100)"
    )
    p["store"].add_argument("action", choices=("migrate", "copy", "prune"), help="what to do")
    p["store"].add_argument("--to", metavar="URL", help="copy: the store to copy into")
    for verb in ("store", "history"):
        p[verb].add_argument(
            "--dry-run", action="store_true", help="prune: count what would go, delete nothing"
        )
        p[verb].add_argument(
            "--before",
            metavar="DATE",
            help="prune: runs started before DATE (YYYY-MM-DD or ISO time; default: by"
            " history.retention)",
        )
    p["ping"].add_argument("name", help="check name (with --url: its name or key)")
    what = p["ping"].add_mutually_exclusive_group()
    what.add_argument("--start", action="store_true", help="the job has started")
    what.add_argument("--fail", action="store_true", help="the job has failed")
    what.add_argument(
        "--exit-code", type=_exit_code, metavar="N", help="the job's exit code (0 is a success)"
    )
    p["ping"].add_argument(
        "--log", metavar="FILE", help="send FILE's last 10 kB as the run's log ('-': stdin)"
    )
    p["wrap"].add_argument("name", help="check name (with --url: its name or key)")
    p["wrap"].add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    for verb in ("ping", "wrap"):
        p[verb].add_argument(
            "--url",
            metavar="URL",
            help="ping the script-monitor server at URL (e.g. http://monitor:8787) over HTTP"
            " instead of recording into this host's store",
        )
    p["worker"].add_argument(
        "--queues", metavar="A,B", help="queues to take runs from (default celery.queue)"
    )
    p["worker"].add_argument(
        "--concurrency", type=_positive, default=4, help="runs at once (default 4)"
    )
    p["worker"].add_argument(
        "--hostname", metavar="NAME", help="default script-monitor@<this machine's hostname>"
    )
    return parser


def _verb_in(argv: list[str]) -> str | None:
    """The verb of a command line, when it is plain to see (else None: build them all);
    ``TOP`` when the line asks for the top-level help or version, before any verb."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--config-dir":
            i += 2
            continue
        if word.startswith("--config-dir=") or word in ("--no-color", "--no-pager"):
            i += 1
            continue
        if word in ("-h", "--help", "--version"):
            return TOP
        return word if word in VERBS or word in HIDDEN else None  # typos: every parser
    return None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text!r}")
    return value


def _exit_code(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an exit code: {text!r}") from None
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError(f"must be 0 to 255: {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 to 65535: {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``script-monitor`` command; returns the exit code."""
    startup.pause_collector()  # until the configuration is loaded (commands.load)
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    finally:
        startup.resume_collector()


def _main(words: list[str]) -> int:
    args = build_parser(_verb_in(words)).parse_args(words)
    from .errors import EXIT_INTERNAL, EXIT_SIGINT, ScriptMonitorError

    where = VERBS.get(args.verb) or HIDDEN[args.verb]
    module = importlib.import_module(f".commands.{where[0]}", __package__)
    handler = getattr(module, "cmd_" + args.verb.strip("_").replace("-", "_"))
    try:
        return handler(args)
    except ScriptMonitorError as e:
        _print_error(e)
        return e.exit_code
    except KeyboardInterrupt:
        print("script-monitor: interrupted", file=sys.stderr)
        return EXIT_SIGINT
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except Exception:
        return _crash(args.verb, EXIT_INTERNAL)


def _print_error(e: Exception) -> None:
    from .errors import ConfigError

    if isinstance(e, ConfigError):
        for problem in e.problems + e.warnings:
            print(problem, file=sys.stderr)
        n = len(e.problems)
        print(
            f"script-monitor: configuration is invalid ({n} error{'s' * (n != 1)})", file=sys.stderr
        )
    else:
        print(f"script-monitor: {e}", file=sys.stderr)


def _silence_stdout() -> None:
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except OSError:
        pass


def _crash(verb: str, code: int) -> int:
    import tempfile
    import traceback

    text = traceback.format_exc()
    with tempfile.NamedTemporaryFile(
        "w", prefix="script-monitor-crash-", suffix=".log", delete=False
    ) as f:
        f.write(text)
    last = text.strip().splitlines()[-1]
    print(
        f"script-monitor: unexpected error in '{verb}': {last}\n"
        f"details were written to {f.name}; please report it",
        file=sys.stderr,
    )
    return code
