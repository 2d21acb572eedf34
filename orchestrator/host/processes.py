"""Long-running child processes under a watchdog (the `--upgrade` run).

`run_watched` starts an argv (no shell) with its output appended to a log file
the tool owns, follows that file (and any other log the child writes) line by
line, and ends the child when it runs past its time limit or *stalls*: no new
log line, ~0 CPU and no I/O for `stall` seconds (the known Orthanc deadlock
sits in a futex wait doing exactly nothing). Facts come from psutil, not from
guesses. A child is ended with SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import psutil

from orchestrator.errors import CommandError
from orchestrator.host.changes import Changes
from orchestrator.host.clock import Clock
from orchestrator.host.pidfd import open_pidfd, wait_exit

POLL = 0.2  # seconds between two looks at the child
KILL_GRACE = 10.0  # seconds between SIGTERM and SIGKILL
CPU_FLOOR = 0.05  # CPU seconds that always count as activity
CPU_SHARE = 0.01  # ... or 1 % of the quiet period, whichever is larger
IO_FLOOR = 4096  # bytes read or written that count as activity
KEEP_LINES = 2000


class Ended(str, Enum):
    """Why a watched child is no longer running."""

    EXITED = "exited"
    TIMEOUT = "timeout"  # ran past its time limit: killed
    STALL = "stall"  # no log line, no CPU, no I/O for `stall` seconds: killed
    INTERRUPTED = "interrupted"  # the tool was interrupted: killed
    READY = "ready"  # `ready()` said the work is done (a start that migrates): ended gently
    NOT_RUN = "not-run"  # dry run


@dataclass
class Watched:
    """What a watched child did."""

    ended: Ended
    returncode: int | None = None
    elapsed: float = 0.0
    quiet: float = 0.0  # seconds without activity when it ended (the stall's length)
    pid: int | None = None
    lines: list[str] = field(default_factory=list)
    log: str | None = None

    def to_dict(self) -> dict:
        return {"ended": self.ended.value, "returncode": self.returncode,
                "elapsed": round(self.elapsed, 3), "quiet": round(self.quiet, 3),
                "pid": self.pid, "log": self.log, "last_lines": self.lines[-5:]}


@dataclass(frozen=True)
class Sample:
    """One look at a watched child: what the watchdog's rule is fed."""

    elapsed: float  # seconds since the child started
    new_lines: bool  # a log line appeared since the last look
    cpu: float  # CPU seconds used so far
    io: int  # bytes read and written so far


@dataclass(frozen=True)
class Activity:
    """The watchdog's memory: when the child last did something, and the counters then."""

    at: float = 0.0  # elapsed seconds at the last activity
    cpu: float = 0.0
    io: int = 0

    def quiet(self, elapsed: float) -> float:
        return elapsed - self.at


def watchdog(last: Activity, sample: Sample, *, timeout: float,
             stall: float) -> tuple[Activity, Ended | None]:
    """The rule: the child is active when it logs a line, uses CPU (more than CPU_FLOOR, or
    CPU_SHARE of the quiet time) or moves IO_FLOOR bytes; it is ended past `timeout`, or
    after `stall` seconds without activity. Pure: samples in, (memory, verdict or None) out."""
    if sample.new_lines:
        last = Activity(sample.elapsed, last.cpu, last.io)
    quiet = last.quiet(sample.elapsed)
    if sample.cpu - last.cpu >= max(CPU_FLOOR, CPU_SHARE * quiet) or sample.io - last.io >= IO_FLOOR:
        last, quiet = Activity(sample.elapsed, sample.cpu, sample.io), 0.0
    if sample.elapsed >= timeout:
        return last, Ended.TIMEOUT
    if quiet >= stall:
        return last, Ended.STALL
    return last, None


class LogTail:
    """Follow a growing text file; return its new complete lines."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0
        self.partial = b""

    def read(self, final: bool = False) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        self.offset += len(data)
        data = self.partial + data
        parts = data.split(b"\n")
        self.partial = parts.pop()
        if final and self.partial:
            parts.append(self.partial)
            self.partial = b""
        return [p.decode(errors="replace").rstrip("\r") for p in parts if p.strip()]


@dataclass(frozen=True)
class RunAs:
    """The POSIX identity a child runs as."""

    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]


def run_as(user: str | None) -> RunAs | None:
    """The identity for `user`, or None when no switch is needed (same user, or none)."""
    if not user or os.name != "posix":
        return None
    import pwd

    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise CommandError(f"no such user {user!r} on this machine",
                           hint="fix service.user in the plan") from None
    if pw.pw_uid == os.geteuid():
        return None
    if os.geteuid() != 0:
        raise CommandError(f"cannot run as user {user}: the tool does not run as root",
                           hint=f"run the tool as root, or as {user}")
    return RunAs(user, pw.pw_uid, pw.pw_gid, tuple(os.getgrouplist(user, pw.pw_gid)))


class Processes:
    """Start watched children (a change) and look at processes (reads)."""

    def __init__(self, changes: Changes, clock: Clock, *, hidden_env: Sequence[str] = ()):
        self.changes = changes
        self.clock = clock
        self.hidden_env = tuple(hidden_env)  # secrets the child must not inherit

    # -- reads -------------------------------------------------------------------
    def alive(self, pid: int | None, create_time: float | None) -> bool:
        """True when process `pid` exists and is the one started at `create_time`."""
        if not pid:
            return False
        try:
            proc = psutil.Process(pid)
            if create_time is not None and abs(proc.create_time() - create_time) > 0.05:
                return False
            return proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def started_at(self, pid: int | None) -> float | None:
        """When process `pid` started (epoch seconds), or None if it is gone or unreadable."""
        if not pid:
            return None
        return _create_time(_psutil_process(pid))

    def listens(self, pid: int, port: int) -> bool | None:
        """True when `pid` (or a child of it) listens on TCP `port`; None when unreadable."""
        try:
            proc = psutil.Process(pid)
            family = [proc] + proc.children(recursive=True)
            for p in family:
                conns = p.net_connections(kind="inet") if hasattr(p, "net_connections") \
                    else p.connections(kind="inet")
                if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                       for c in conns):
                    return True
            return False
        except psutil.AccessDenied:
            return None
        except psutil.Error:
            return False

    # -- changes -----------------------------------------------------------------
    def run_watched(self, argv: Sequence[str], *, text: str, log_path: Path,
                    timeout: float, stall: float, extra_logs: Sequence[Path] = (),
                    user: str | None = None, cwd: str | None = None,
                    on_spawn: Callable[[int, float], None] | None = None,
                    on_line: Callable[[str], None] | None = None,
                    ready: Callable[[], bool] | None = None,
                    active: Callable[[], bool] | None = None) -> Watched:
        """Run argv to its end under the watchdog; `text` describes it in the change list.

        `ready()` true ends a child that would serve forever (SIGTERM: Ended.READY);
        `active()` true counts as activity (work done elsewhere, e.g. in a database server).
        """
        argv = [str(a) for a in argv]
        identity = run_as(user)  # a bad user fails in a dry run too
        return self.changes.apply(
            text, self._watch, argv, log_path=Path(log_path), timeout=timeout, stall=stall,
            extra_logs=[Path(p) for p in extra_logs], identity=identity, cwd=cwd,
            on_spawn=on_spawn, on_line=on_line, ready=ready, active=active,
            dry_result=Watched(Ended.NOT_RUN, log=str(log_path)))

    def end(self, pid: int, create_time: float | None, text: str,
            grace: float = KILL_GRACE) -> None:
        """End process `pid` (if it is still the one started at `create_time`)."""
        self.changes.apply(text, self._end, pid, create_time, grace)

    def _end(self, pid: int, create_time: float | None, grace: float) -> None:
        if not self.alive(pid, create_time):
            return
        try:
            proc = psutil.Process(pid)
            proc.terminate()
            try:
                proc.wait(grace)
            except psutil.TimeoutExpired:
                proc.kill()
                proc.wait(grace)
        except psutil.NoSuchProcess:
            pass

    def _env(self) -> Mapping[str, str]:
        return {k: v for k, v in os.environ.items() if k not in self.hidden_env}

    def _watch(self, argv: list[str], *, log_path: Path, timeout: float, stall: float,
               extra_logs: list[Path], identity: RunAs | None, cwd: str | None,
               on_spawn: Callable[[int, float], None] | None,
               on_line: Callable[[str], None] | None,
               ready: Callable[[], bool] | None = None,
               active: Callable[[], bool] | None = None) -> Watched:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        kwargs: dict = {}
        if identity is not None:
            kwargs.update(user=identity.uid, group=identity.gid, extra_groups=list(identity.groups))
        with open(log_path, "ab") as log:
            try:
                child = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=cwd, env=self._env(),
                                         start_new_session=True, **kwargs)
            except OSError as exc:
                raise CommandError(f"cannot run {argv[0]}: {exc.strerror or exc}",
                                   hint="check the binary's path and mode") from exc
        proc = _psutil_process(child.pid)
        create_time = _create_time(proc)
        if on_spawn is not None:
            on_spawn(child.pid, create_time)
        tails = [LogTail(log_path)] + [LogTail(p) for p in extra_logs]
        lines: deque[str] = deque(maxlen=KEEP_LINES)

        def drain(final: bool = False) -> bool:
            got = False
            for tail in tails:
                for line in tail.read(final):
                    got = True
                    lines.append(line)
                    if on_line is not None:
                        on_line(line)
            return got

        start = self.clock.now()
        cpu, io = _sample(proc)
        last, ended = Activity(0.0, cpu, io), Ended.EXITED
        exit_wait = _ExitWait(child)
        try:
            while True:
                elapsed = self.clock.now() - start
                new_lines = drain()
                if child.poll() is not None:
                    if new_lines:
                        last = Activity(elapsed, last.cpu, last.io)
                    break
                if ready is not None and ready():
                    ended = Ended.READY
                    break
                cpu, io = _sample(proc)
                busy = new_lines or (active is not None and active())
                last, verdict = watchdog(last, Sample(elapsed, busy, cpu, io),
                                         timeout=timeout, stall=stall)
                if verdict is not None:
                    ended = verdict
                    break
                exit_wait(POLL)
        except BaseException:
            _kill(child)
            drain(final=True)
            raise
        finally:
            exit_wait.close()
        quiet = last.quiet(self.clock.now() - start)
        if ended == Ended.READY:
            _kill(child, KILL_GRACE * 6)  # SIGTERM first: Orthanc closes its database cleanly
        elif ended != Ended.EXITED:
            _kill(child)
        else:
            child.wait()
        drain(final=True)
        return Watched(ended, child.returncode if ended == Ended.EXITED else None,
                       elapsed=self.clock.now() - start, quiet=quiet, pid=child.pid,
                       lines=list(lines), log=str(log_path))


class _ExitWait:
    """Wait up to a timeout for a child to exit, woken by the kernel the moment it does.

    `Popen.wait(timeout)` sleeps in growing steps of up to 50 ms, so an `--upgrade` that
    ends after 40 ms was seen 24 ms late. A pidfd (Linux >= 5.3) is readable exactly when
    the child exits; without one, Popen.wait it is.
    """

    def __init__(self, child: subprocess.Popen):
        self.child = child
        fd = open_pidfd(child.pid)
        self.fd: int | None = fd if isinstance(fd, int) else None  # GONE: Popen.wait at once

    def __call__(self, timeout: float) -> None:
        if self.fd is not None:
            wait_exit(self.fd, timeout)
            return
        try:
            self.child.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _psutil_process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def _create_time(proc: psutil.Process | None) -> float | None:
    try:
        return proc.create_time() if proc is not None else None
    except psutil.Error:
        return None


def _sample(proc: psutil.Process | None) -> tuple[float, int]:
    """CPU seconds and bytes of I/O the process used so far (0 where unreadable)."""
    if proc is None:
        return 0.0, 0
    try:
        t = proc.cpu_times()
        cpu = t.user + t.system
    except psutil.Error:
        cpu = 0.0
    try:
        io = proc.io_counters()
        moved = getattr(io, "read_chars", io.read_bytes) + getattr(io, "write_chars", io.write_bytes)
    except (psutil.Error, AttributeError, NotImplementedError):
        moved = 0
    return cpu, moved


def _kill(child: subprocess.Popen, grace: float = KILL_GRACE) -> None:
    """SIGTERM, then SIGKILL after `grace`: the deadlocked Orthanc obeys SIGTERM."""
    if child.poll() is not None:
        return
    try:
        child.send_signal(signal.SIGTERM)
        child.wait(grace)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(grace)
    except ProcessLookupError:
        pass
