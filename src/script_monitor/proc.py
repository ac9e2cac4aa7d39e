"""Spawn one script in its own session, wait for it, end its whole tree.

Every child goes through ``spawn`` and ``conclude``.  The child's stdout and stderr are the
run's log file itself (opened for appending), so output lands on disk as it is
written, in the order it was written, without passing through this process and
without being held in memory.  Waiting uses a pidfd, so a run that ends is
noticed at once and a timeout or an interrupt wakes the waiter at once.
"""

from __future__ import annotations

import os
import resource
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable

import msgspec

from .states import RunStatus

POLL_INTERVAL = 0.02
TOKEN_VAR = "SCRIPT_MONITOR_RUN_TOKEN"


class Interrupt:
    """A one-shot flag that wakes every waiting run when script-monitor is told to stop."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)
        self.signum: int | None = None

    def fire(self, signum: int) -> None:
        """Called from a signal handler: remember the first signal, wake the waiters."""
        if self.signum is None:
            self.signum = signum
            try:
                os.write(self._w, b"!")
            except OSError:
                pass

    @property
    def fired(self) -> bool:
        return self.signum is not None

    def fileno(self) -> int:
        return self._r

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds or until fired; return whether it fired."""
        if self.fired:
            return True
        select.select([self._r], [], [], max(timeout, 0))
        return self.fired


class ProcResult(msgspec.Struct):
    """How a child ended."""

    status: str  # a RunStatus: success | failed | timeout | interrupted
    exit_code: int | None = None
    signal: int | None = None
    pid: int | None = None
    error: str | None = None
    leftovers: list[int] = msgspec.field(default_factory=list)
    # What its process tree used (CPU user and system seconds, peak resident bytes of
    # its largest process): the child's rusage from wait4, which holds every descendant
    # it waited for, plus the orphans it left that we collected as their subreaper.
    usage: tuple[float, float, int] | None = None


def spawn(
    argv: list[str], *, cwd: str, env: dict[str, str], out_fd: int
) -> Child | subprocess.Popen[bytes] | ProcResult:
    """Start ``argv`` in its own session; a failed ProcResult when it cannot start.

    When the child's working directory is ours and the program's path is known,
    ``posix_spawn`` (a vfork and an exec, all in C) starts it for about half the
    cost of ``subprocess.Popen``; otherwise, Popen.  Both give the child the same
    things: a new session, /dev/null as stdin, ``out_fd`` as stdout and stderr,
    no other descriptors (ours are all close-on-exec, see ``seal_descriptors``), and
    SIGPIPE and SIGXFSZ at their defaults (Python ignores them).
    """
    with adopt.lock:  # no reap of adopted orphans between a start and its registration
        return _spawn(argv, cwd, env, out_fd)


def _spawn(
    argv: list[str], cwd: str, env: dict[str, str], out_fd: int
) -> Child | subprocess.Popen[bytes] | ProcResult:
    stdin = _devnull()
    program = _fast_program(argv, cwd, env, stdin, out_fd)
    if program is not None:
        try:
            pid = os.posix_spawn(
                program,
                argv,
                env,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, stdin, 0),
                    (os.POSIX_SPAWN_DUP2, out_fd, 1),
                    (os.POSIX_SPAWN_DUP2, out_fd, 2),
                ],
                setsid=True,
                setsigdef=_DEFAULT_SIGNALS,
            )
        except ValueError as e:  # a NUL byte in the argv or environment
            return ProcResult(RunStatus.FAILED, error=f"cannot start: {e}")
        except OSError as e:
            return ProcResult(
                RunStatus.FAILED, error=f"cannot start: {e.strerror or e}: {argv[0]!r}"
            )
        adopt.started(pid)
        return Child(pid)
    try:
        child = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=stdin,
            stdout=out_fd,
            stderr=out_fd,
            start_new_session=True,
            close_fds=True,
        )
        adopt.started(child.pid)
        return Child(child.pid, child)
    except ValueError as e:  # a NUL byte in the argv, environment or cwd
        return ProcResult(RunStatus.FAILED, error=f"cannot start: {e}")
    except OSError as e:
        if e.filename == cwd:  # the working directory, not the program, is missing
            why = f"cannot start: working directory {cwd!r}: {e.strerror}"
            return ProcResult(RunStatus.FAILED, error=why)
        return ProcResult(RunStatus.FAILED, error=f"cannot start: {e.strerror or e}: {argv[0]!r}")


_DEFAULT_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ") if hasattr(signal, name)
)
_SEALED: list[str] = []  # the working directory whose descriptors were sealed
_FOUND: dict[tuple[str, str], str | None] = {}


def seal_descriptors() -> None:
    """Make every inherited descriptor close-on-exec, once, and allow fast spawns.

    Python opens its own descriptors close-on-exec; ones inherited from our parent
    (a shell, cron, a supervisor) may not be, and no child may receive them.  Popen's
    ``close_fds`` does this per child; doing it once lets ``spawn`` use posix_spawn
    for children that run in our working directory.
    """
    if _SEALED or not hasattr(os, "posix_spawn"):
        return
    try:
        fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
        here = os.getcwd()
    except OSError:
        return
    for fd in fds:
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the directory listing's own descriptor, already closed
    _SEALED.append(here)


def _fast_program(
    argv: list[str], cwd: str, env: dict[str, str], stdin: int, out_fd: int
) -> str | None:
    """The program to posix_spawn, or None when Popen must start this child."""
    if not _SEALED or cwd != _SEALED[0] or stdin < 3 or out_fd < 3 or not argv:
        return None
    name = argv[0]
    if "/" in name:
        return name
    search = env.get("PATH", os.defpath)
    key = (name, search)
    if key not in _FOUND:  # Popen's search: the first executable file along the child's PATH
        _FOUND[key] = next(
            (
                path
                for folder in search.split(os.pathsep)
                if os.path.isfile(path := os.path.join(folder or ".", name))
                and os.access(path, os.X_OK)
            ),
            None,
        )
    return _FOUND[key]  # not found: Popen tells why


class Child:
    """A child we started: the part of Popen's interface the engine uses, reaped with
    ``wait4`` so that what it used (``rusage``) is known.  A child Popen started keeps
    its Popen (``popen``), told the exit status so that it never waits itself."""

    __slots__ = ("pid", "popen", "returncode", "rusage")

    def __init__(self, pid: int, popen: subprocess.Popen | None = None):
        self.pid = pid
        self.popen = popen
        self.returncode: int | None = None
        self.rusage: resource.struct_rusage | None = None

    def _reaped(self, status: int | None, rusage: resource.struct_rusage | None) -> int:
        # Reaped elsewhere (SIGCHLD ignored): 0, as Popen does.
        code = 0 if status is None else os.waitstatus_to_exitcode(status)
        self.returncode, self.rusage = code, rusage
        if self.popen is not None:
            self.popen.returncode = code
        return code

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
            except ChildProcessError:
                return self._reaped(None, None)
            if pid:
                self._reaped(status, rusage)
        return self.returncode

    def wait(self) -> int | None:
        if self.returncode is None:
            try:
                _, status, rusage = os.wait4(self.pid, 0)
            except ChildProcessError:
                return self._reaped(None, None)
            self._reaped(status, rusage)
        return self.returncode


def conclude(
    proc: subprocess.Popen | Child, status: str, token: str, grace: float, kill_leftovers: bool
) -> ProcResult:
    """The result of a child that ``status`` ('exited', 'timeout', 'interrupted') ended.

    A timeout or an interrupt ends the whole tree first; after an exit, leftovers are
    listed (and ended with ``kill_leftovers``).
    """
    if status != "exited" or kill_leftovers:
        adopt.run_ending(token)
    try:
        result = _conclude(proc, status, token, grace, kill_leftovers)
        adopt.collect()  # orphans of the run that ended: what they used counts for it
        result.usage = _usage(getattr(proc, "rusage", None), adopt.used(token))
        return result
    finally:
        adopt.run_ended(token, proc.pid)


def _usage(
    rusage: resource.struct_rusage | None, orphans: list[float] | None
) -> tuple[float, float, int] | None:
    """(user CPU s, system CPU s, peak resident bytes) of a tree: the child's own and
    its waited-for descendants' (``rusage``) and its collected orphans'."""
    if rusage is None and orphans is None:
        return None
    user, system, rss = orphans or (0.0, 0.0, 0)
    if rusage is not None:
        user += rusage.ru_utime
        system += rusage.ru_stime
        rss = max(rss, rusage.ru_maxrss)
    return round(user, 6), round(system, 6), int(rss) * 1024  # ru_maxrss is in KiB on Linux


def _conclude(
    proc: subprocess.Popen | Child, status: str, token: str, grace: float, kill_leftovers: bool
) -> ProcResult:
    if status != "exited":
        terminate_tree(proc, token, grace)
        return ProcResult(status, proc.returncode, _signal_of(proc.returncode), proc.pid)
    proc.wait()
    code = proc.returncode
    assert code is not None  # waited for
    result = ProcResult(
        RunStatus.SUCCESS if code == 0 else RunStatus.FAILED,
        code if code >= 0 else None,
        _signal_of(code),
        proc.pid,
    )
    if kill_leftovers:
        result.leftovers = tree_members(proc.pid, token)
        if result.leftovers:
            terminate_tree(proc, token, grace)
    elif group_alive(proc.pid):
        # Only the cheap check after every run: processes that left the group are
        # found by the token scan when they must be ended (timeout, interrupt, kill).
        result.leftovers = group_members(proc.pid)
    return result


_DEVNULL: list[int] = []


def _devnull() -> int:
    """One /dev/null descriptor for every child's stdin (subprocess opens one per child)."""
    if not _DEVNULL:
        _DEVNULL.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    return _DEVNULL[0]


def _signal_of(code: int | None) -> int | None:
    return -code if code is not None and code < 0 else None


def wait_for_exit(
    proc: subprocess.Popen | Child,
    timeout: float,
    interrupt: Interrupt,
    over: Callable[[], bool] | None = None,
) -> str:
    """Wait for exit; return 'exited', 'timeout' or 'interrupted' — or 'failed' when
    ``over`` (asked every ``SAMPLE_EVERY`` seconds) says the run went over a limit."""
    deadline = time.monotonic() + timeout if timeout else None
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return _wait_polling(proc, deadline, interrupt, over)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.register(interrupt.fileno(), select.POLLIN)
        while True:
            wait_ms = -1 if deadline is None else max(0, (deadline - time.monotonic()) * 1000)
            if wait_ms != -1:  # a huge timeout (1e308, .inf) must not overflow poll's int
                wait_ms = int(min(wait_ms, 3_600_000)) + 1
            if over is not None:
                sample_ms = int(SAMPLE_EVERY * 1000)
                wait_ms = sample_ms if wait_ms == -1 else min(wait_ms, sample_ms)
            ready = {fd for fd, _ in poller.poll(wait_ms)}
            if pidfd in ready:
                proc.wait()
                return "exited"
            if interrupt.fired:
                return RunStatus.INTERRUPTED
            if deadline is not None and time.monotonic() >= deadline:
                return RunStatus.TIMEOUT
            if over is not None and over():
                return RunStatus.FAILED
    finally:
        os.close(pidfd)


def _wait_polling(
    proc: subprocess.Popen | Child,
    deadline: float | None,
    interrupt: Interrupt,
    over: Callable[[], bool] | None,
) -> str:
    next_look = time.monotonic() + SAMPLE_EVERY
    while proc.poll() is None:
        if interrupt.fired:
            return RunStatus.INTERRUPTED
        if deadline is not None and time.monotonic() >= deadline:
            return RunStatus.TIMEOUT
        if over is not None and time.monotonic() >= next_look:
            next_look = time.monotonic() + SAMPLE_EVERY
            if over():
                return RunStatus.FAILED
        interrupt.wait(POLL_INTERVAL)
    return "exited"


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is left in the process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Zombies count for killpg; an init that does not reap would keep them forever.
    return bool(group_members(pgid))


def _proc_entries() -> list[int]:
    me = os.getpid()
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and int(e) != me]


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()


def group_members(pgid: int) -> list[int]:
    """The live pids in process group ``pgid`` (read from /proc)."""
    key = str(pgid).encode()
    members = []
    for pid in _proc_entries():
        fields = _stat_fields(pid)
        if fields and len(fields) > 2 and fields[2] == key and fields[0] not in (b"Z", b"X"):
            members.append(pid)
    return members


def token_members(token: str) -> list[int]:
    """The live pids whose environment carries this run's token."""
    if not token:
        return []
    needle = b"\0" + TOKEN_VAR.encode() + b"=" + token.encode() + b"\0"
    found = []
    for pid in _proc_entries():
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                data = b"\0" + f.read() + b"\0"
        except OSError:
            continue
        if needle in data:
            found.append(pid)
    return found


def tree_members(pgid: int, token: str) -> list[int]:
    """Every live process of a run: its process group, every token carrier, and the
    orphans it left that were re-parented to us (see ``Adoptions``)."""
    return sorted(set(group_members(pgid)) | set(token_members(token)) | set(adopt.orphans(token)))


_PAGE = os.sysconf("SC_PAGE_SIZE")
SAMPLE_EVERY = 0.2  # seconds between two looks at the tree of a run with limits


def tree_usage(pgid: int, token: str) -> tuple[int, float]:
    """What a run's live tree uses now: resident bytes (summed over its processes) and
    CPU seconds (theirs, the children they waited for, and its orphans collected so
    far), read from /proc."""
    rss, ticks = 0, 0
    for pid in tree_members(pgid, token):
        fields = _stat_fields(pid)
        if fields and len(fields) > 21:
            ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
            rss += int(fields[21])
    used = adopt.used(token)
    return rss * _PAGE, ticks * adopt.tick + (used[0] + used[1] if used else 0.0)


def over_limits(pgid: int, token: str, max_rss: int | None, max_cpu: float | None) -> str | None:
    """Which limit the run's tree is over (``limits.max_rss`` or ``limits.max_cpu``), or None."""
    rss, cpu = tree_usage(pgid, token)
    if max_rss is not None and rss > max_rss:
        return "max_rss"
    if max_cpu is not None and cpu > max_cpu:
        return "max_cpu"
    return None


class _Run:
    __slots__ = ("born", "ending")

    def __init__(self, born: float):
        self.born, self.ending = born, False


class Adoptions:
    """Orphans of our scripts, re-parented to us as a child subreaper, and whose they are.

    A descendant that leaves its run's process group *and* clears its environment
    (``env -i setsid sh -c 'sleep 999 &'``) carries nothing that names its run; but
    once its parent exits, the kernel re-parents it to the nearest subreaper: us.
    Such an orphan belongs to the run that was alive when it started, when only one
    was; when several were, it is ended only once every one of them is being ended
    (a timeout or an interrupt), never while it may be another live run's.
    """

    def __init__(self) -> None:
        self.enabled = False
        self.roots: set[int] = set()  # children we started and have not reaped
        self.helpers: set[int] = set()  # our own helper processes (masking relays)
        self.runs: dict[str, _Run] = {}  # token -> the run's start (CLOCK_BOOTTIME)
        # token -> [user s, system s, peak KiB] of the run's orphans collected so far
        self.usage: dict[str, list[float]] = {}
        self.tick = 1.0 / os.sysconf("SC_CLK_TCK")
        self.lock = threading.Lock()

    def become_subreaper(self) -> bool:
        """Ask the kernel to re-parent our orphaned descendants to us (Linux 3.4+)."""
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            self.enabled = libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
        except (OSError, AttributeError):
            self.enabled = False
        return self.enabled

    def started(self, pid: int) -> None:
        if self.enabled:
            self.roots.add(pid)

    def run_started(self, token: str) -> None:
        if self.enabled:
            self.runs[token] = _Run(time.clock_gettime(time.CLOCK_BOOTTIME) - self.tick)

    def run_ending(self, token: str) -> None:
        run = self.runs.get(token)
        if run is not None:
            run.ending = True

    def run_ended(self, token: str, pid: int) -> None:
        self.runs.pop(token, None)
        self.usage.pop(token, None)
        self.roots.discard(pid)

    def used(self, token: str) -> list[float] | None:
        """What the run's orphans collected so far used: [user s, system s, peak KiB]."""
        return self.usage.get(token)

    def _count(self, pid: int, rusage: resource.struct_rusage, born: float | None) -> None:
        """Add a collected orphan's rusage to the run it belongs to: the newest run that
        started before it (the only one, unless several run at once)."""
        if born is None:
            return
        owner = max(
            ((r.born, t) for t, r in list(self.runs.items()) if r.born <= born), default=None
        )
        if owner is None:
            return
        used = self.usage.setdefault(owner[1], [0.0, 0.0, 0])
        used[0] += rusage.ru_utime
        used[1] += rusage.ru_stime
        used[2] = max(used[2], rusage.ru_maxrss)

    def _born(self, pid: int) -> float | None:
        fields = _stat_fields(pid)  # a zombie keeps its stat until it is collected
        return int(fields[19]) * self.tick if fields and len(fields) > 19 else None

    def _collect(self, pid: int) -> None:
        """Collect one ended orphan (or helper) and count what it used."""
        born = self._born(pid) if self.runs else None
        try:
            got, _, rusage = os.wait4(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if got and pid not in self.helpers:
            self._count(pid, rusage, born)
        self.helpers.discard(pid)

    def collect(self) -> None:
        """Collect the orphans that ended, as long as the kernel names them first; cheap
        (one ``waitid``) when none has ended.  Unlike ``reap`` it never scans /proc: a
        run's own ended child, left for its executor, stops it."""
        if not self.enabled:
            return
        with self.lock:
            while True:
                try:
                    info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                except ChildProcessError:
                    return
                if info is None or info.si_pid in self.roots:
                    return
                self._collect(info.si_pid)

    def orphans(self, token: str) -> list[int]:
        """Adopted processes (and their descendants) that belong to the run ``token``."""
        run = self.runs.get(token)
        if not self.enabled or run is None:
            return []
        me = os.getpid()
        parents: dict[int, int] = {}
        mine: list[int] = []
        others = [r for t, r in list(self.runs.items()) if t != token]
        for pid in _proc_entries():
            fields = _stat_fields(pid)
            if not fields or len(fields) < 20 or fields[0] in (b"Z", b"X"):
                continue
            ppid = int(fields[1])
            parents[pid] = ppid
            if ppid != me or pid in self.roots or pid in self.helpers:
                continue
            born = int(fields[19]) * self.tick
            if born < run.born:
                continue  # older than the run: not its own
            if any(r.born <= born and not r.ending for r in others):
                continue  # may be another live run's
            mine.append(pid)
        return _with_descendants(mine, parents)

    def reap(self) -> None:
        """Collect the exit status of adopted orphans that ended (no zombies pile up)."""
        if not self.enabled:
            return
        with self.lock:
            self._reap()

    def _reap(self) -> None:
        # Ask the kernel first (WNOWAIT: look, do not collect).  Most of the time no
        # child has ended, or the one that has is an orphan, and the /proc scan below
        # (about 1.5 ms with a hundred processes, more on a busy machine) is not needed.
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return  # no children at all
            if info is None:
                return  # none has ended
            if info.si_pid in self.roots:
                break  # a run's own process, for its executor: look past it below
            self._collect(info.si_pid)
        me = os.getpid()
        for pid in _proc_entries():
            fields = _stat_fields(pid)
            if fields and fields[0] == b"Z" and int(fields[1]) == me and pid not in self.roots:
                self._collect(pid)


def _with_descendants(pids: list[int], parents: dict[int, int]) -> list[int]:
    found = set(pids)
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    return sorted(found)


adopt = Adoptions()


def _signal_all(pgid: int, pids: list[int], sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def terminate_tree(proc: subprocess.Popen | Child, token: str, grace: float) -> None:
    """SIGTERM the run's whole tree, SIGKILL whatever is left after ``grace`` seconds.

    The tree is the child's process group plus every process carrying the run's
    token, which finds descendants that started their own session (setsid, double
    fork).  The leader is always reaped.
    """
    pgid = proc.pid
    signalled = set(token_members(token))
    _signal_all(pgid, list(signalled), signal.SIGTERM)
    _signal_all(pgid, [], signal.SIGCONT)
    deadline = time.monotonic() + grace
    while True:
        proc.poll()
        left = tree_members(pgid, token)
        if proc.returncode is not None and not left:
            return
        if time.monotonic() >= deadline:
            break
        # Descendants may appear while the tree shuts down: each gets one SIGTERM too.
        new = [pid for pid in left if pid not in signalled]
        signalled.update(new)
        _signal_all(pgid, new, signal.SIGTERM)
        time.sleep(POLL_INTERVAL)
    end = time.monotonic() + 5
    while True:
        _signal_all(pgid, tree_members(pgid, token), signal.SIGKILL)
        proc.poll()
        if proc.returncode is not None and not tree_members(pgid, token):
            break
        if time.monotonic() >= end:
            break
        time.sleep(POLL_INTERVAL)
    proc.wait()
