"""What makes a command start faster than plain Python would: every such measure is
here, with what it saves.

Figures are instructions counted with ``valgrind --tool=callgrind`` (the same on a busy
machine as on a quiet one; bench/README.md), with and without the measure, on W6
(``--help``, and ``list`` on 500 scripts with 100 000 runs) and W3 (a serial group of
`true`s); about 4.8 M instructions are a millisecond here (``--help``: 125 M, 26 ms).
A measure that saved less than 2 ms was removed rather than kept here.

It imports nothing that ``cli`` has not imported already: ``cli`` loads it first.
"""

from __future__ import annotations

import argparse
import gc
import os


def plain_argparse_texts() -> None:
    """argparse passes each of its own texts ("usage: ", "show this help message and
    exit", ...) through gettext, which looks for a message catalog on disk on every
    call and, as Python ships none for them, finds nothing.  The texts are English
    either way.

    Saves 19 M instructions (4 ms) on ``--help``, 6 M (1.2 ms) on ``list``.
    """
    argparse._ = str  # type: ignore[attr-defined]


class OnlyOneVerb(dict):
    """The sub-parsers when only one verb's is built (``cli.build_parser(only)``): the
    arguments of every other verb go to a sink that keeps nothing, instead of a parser
    per verb that this command line will never use.

    Saves 5 M instructions (1.1 ms) on ``--help``, 12 M (2.4 ms) on ``list``.
    """

    def __missing__(self, verb: str) -> _Sink:
        return _SINK


class _Sink:
    """Takes a sub-parser's arguments and keeps none."""

    def add_argument(self, *args: object, **kwargs: object) -> None:
        pass

    def set_defaults(self, **kwargs: object) -> None:
        pass

    def add_mutually_exclusive_group(self, **kwargs: object) -> _Sink:
        return self


_SINK = _Sink()


def pause_collector() -> None:
    """No cycle collection while modules are imported and the configuration is read:
    they allocate many objects and make no garbage cycles.  ``cli.main`` calls it first;
    ``resume_collector`` ends it.

    Saves 44 M instructions (9 ms) on ``list``; on ``--help``, which loads no
    configuration, the freeze when the command ends spares the collection at exit
    11 M (2.3 ms).
    """
    gc.disable()


def resume_collector() -> None:
    """Collect again, once the configuration is loaded (``commands.load``) or the
    command ends (``cli.main``), whichever comes first.  What exists by then is kept out
    of later collections (``gc.freeze``), so a long-running scheduler or server pays
    nothing for it."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def settle_in(root: os.PathLike[str]) -> None:
    """Work from the configuration directory, where scripts run by default, and make
    every inherited descriptor close-on-exec.

    A child that runs in our working directory can then be started with posix_spawn
    (``proc.spawn``), which has no working-directory argument, instead of
    subprocess.Popen.  Every path is resolved by the time the run commands and the
    worker call this.

    Saves 0.3 M instructions (0.06 ms) per run: 59 M (12 ms) on W3's 200 runs.
    """
    from .proc import seal_descriptors

    try:
        os.chdir(root)
    except OSError:
        return
    seal_descriptors()
