"""Spawn one script in its own session, wait for it, end its whole tree.

Every child goes through ``spawn`` and ``conclude``.  The child's stdout and stderr are the
run's log file itself (opened for appending), so output lands on disk as it is
written, in the order it was written, without passing through this process and
without being held in memory.  Waiting uses a pidfd, so a run that ends is
noticed at once and a timeout or an interrupt wakes the waiter at once.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time

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


def spawn(argv: list[str], *, cwd: str, env: dict[str, str], out_fd: int):
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


def _spawn(argv: list[str], cwd: str, env: dict[str, str], out_fd: int):
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
        return child
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
    """A child started by posix_spawn: the part of Popen's interface the engine uses."""

    __slots__ = ("pid", "returncode")

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored): as Popen does
                self.returncode = 0
                return 0
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int | None:
        if self.returncode is None:
            try:
                _, status = os.waitpid(self.pid, 0)
            except ChildProcessError:
                self.returncode = 0
                return 0
            self.returncode = os.waitstatus_to_exitcode(status)
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
        return _conclude(proc, status, token, grace, kill_leftovers)
    finally:
        adopt.run_ended(token, proc.pid)


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


def wait_for_exit(proc: subprocess.Popen | Child, timeout: float, interrupt: Interrupt) -> str:
    """Wait for exit; return 'exited', 'timeout' or 'interrupted'."""
    deadline = time.monotonic() + timeout if timeout else None
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return _wait_polling(proc, deadline, interrupt)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.register(interrupt.fileno(), select.POLLIN)
        while True:
            wait_ms = -1 if deadline is None else max(0, (deadline - time.monotonic()) * 1000)
            if wait_ms != -1:  # a huge timeout (1e308, .inf) must not overflow poll's int
                wait_ms = int(min(wait_ms, 3_600_000)) + 1
            ready = {fd for fd, _ in poller.poll(wait_ms)}
            if pidfd in ready:
                proc.wait()
                return "exited"
            if interrupt.fired:
                return RunStatus.INTERRUPTED
            if deadline is not None and time.monotonic() >= deadline:
                return RunStatus.TIMEOUT
    finally:
        os.close(pidfd)


def _wait_polling(
    proc: subprocess.Popen | Child, deadline: float | None, interrupt: Interrupt
) -> str:
    while proc.poll() is None:
        if interrupt.fired:
            return RunStatus.INTERRUPTED
        if deadline is not None and time.monotonic() >= deadline:
            return RunStatus.TIMEOUT
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
        self.roots.discard(pid)

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
            self.helpers.discard(info.si_pid)
            try:
                os.waitpid(info.si_pid, os.WNOHANG)
            except ChildProcessError:
                pass
        me = os.getpid()
        for pid in _proc_entries():
            fields = _stat_fields(pid)
            if fields and fields[0] == b"Z" and int(fields[1]) == me and pid not in self.roots:
                if pid in self.helpers:
                    self.helpers.discard(pid)
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass


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
