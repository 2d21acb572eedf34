"""Find the service's processes, and prove that a stopped service really stopped.

A manager's word is not enough: a unit can be "inactive" while a process it
lost track of still holds the index. The proof rests on the processes recorded
before the stop (PID and start time): each must have exited, as the kernel says
(`lifetime`). A scan of the process table alone never proves a stop (an exiting
Orthanc drops its command line before it has exited); it and the index lock
only confirm: no live process of the target's binary names the target's
config, and no process holds the SQLite index (a running Orthanc holds it with
LOCKING_MODE=EXCLUSIVE: `index_is_locked`).

"This host" is the processes that share the tool's root directory: an Orthanc in a
container or a chroot on the same kernel (seen in the process table, with the same
`/usr/sbin/Orthanc /etc/orthanc/` command line) runs another system's files, so it
is neither the service nor another instance here. What an init script's
`start-stop-daemon --exec` would signal is another question, answered by
`exec_collateral` with start-stop-daemon's own rule (it reaches into containers).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from orchestrator.errors import ServiceError
from orchestrator.host.clock import Clock
from orchestrator.orthanc.index import index_is_locked
from orchestrator.services import lifetime
from orchestrator.services.base import ServiceTarget, wait_for
from orchestrator.services.lifetime import Recorded


@dataclass(frozen=True)
class OrthancProcess:
    """A live process of an Orthanc binary, as seen in the process table."""

    pid: int
    cmdline: tuple[str, ...]
    config: str | None  # the config argument (last positional), resolved against its cwd
    arguments: tuple[str, ...] = ()  # every positional argument, resolved
    started_at: float | None = None  # psutil create_time: with the PID, names this process
    elsewhere: bool = False  # under another root directory: a container's or a chroot's

    @property
    def recorded(self) -> Recorded:
        return Recorded(self.pid, self.started_at)

    def runs(self, config: Path | str) -> bool:
        return _norm(str(config)) in self.arguments

    def describe(self) -> str:
        where = ", in a container or chroot" if self.elsewhere else ""
        return f"PID {self.pid} ({' '.join(self.cmdline)[:160]}{where})"


def _norm(path: str) -> str:
    return os.path.normcase(os.path.realpath(path)).rstrip("/\\") or "/"


def _binary_names(binary: Path) -> set[str]:
    names = {Path(binary).name, Path(os.path.realpath(binary)).name}
    return {os.path.normcase(n) for n in names if n}


def _proc_binary_names(proc: psutil.Process, cmdline: list[str]) -> set[str]:
    names = set()
    if cmdline:
        names.add(os.path.normcase(Path(cmdline[0]).name))
    try:
        exe = proc.exe()
    except (psutil.Error, OSError):
        exe = ""
    if exe:
        # A package upgrade replaces the binary under a running process.
        exe = exe.removesuffix(" (deleted)")
        names.add(os.path.normcase(Path(exe).name))
    return names


def _positional_paths(proc: psutil.Process, cmdline: list[str]) -> list[str]:
    """The non-option arguments, made absolute against the process's cwd.

    Orthanc takes its configuration as its (last) positional argument; a
    wrapper (`python3 -c CODE CONFIG`) still names it among its arguments.
    """
    out = []
    cwd: str | None = None
    for arg in cmdline[1:]:
        if arg.startswith("-") or not arg:
            continue
        if os.path.isabs(arg):
            out.append(_norm(arg))
            continue
        if cwd is None:
            try:
                cwd = proc.cwd()
            except (psutil.Error, OSError):
                cwd = ""
        if cwd:
            # Windows: OrthancService.exe runs `Orthanc.exe ... Configuration` from the install folder.
            out.append(_norm(os.path.join(cwd, arg)))
    return out


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _current(proc: psutil.Process) -> psutil.Process | None:
    """The process that has this PID now.

    process_iter keeps its Process objects between calls: when a PID was reused since
    (pid_max is 32768 on many hosts), it yields the old object once, whose is_running()
    is False and whose create_time is the old process's. A just-started Orthanc would be
    missed, or recorded under a dead process's start time. (The command line, read
    live, already named the new one.)
    """
    if proc.is_running():
        return proc
    try:
        return psutil.Process(proc.pid)
    except psutil.Error:
        return None


def _create_time(proc: psutil.Process) -> float | None:
    try:
        return proc.create_time()
    except psutil.Error:
        return None


def orthanc_processes(binary: Path, *, any_root: bool = False
                      ) -> list[tuple[psutil.Process, OrthancProcess]]:
    """Every live process whose program is named like `binary` (any config), on this host:
    under the tool's root directory (`any_root`: containers and chroots too)."""
    wanted = _binary_names(binary)
    found = []
    for proc in psutil.process_iter():
        try:
            cmdline = proc.cmdline()
        except (psutil.Error, OSError):
            continue
        if not cmdline or not (_proc_binary_names(proc, cmdline) & wanted):
            continue
        proc = _current(proc)
        if proc is None or not _alive(proc):
            continue
        elsewhere = not _shares_our_root(proc.pid)
        if elsewhere and not any_root:
            continue
        paths = _positional_paths(proc, cmdline)
        found.append((proc, OrthancProcess(proc.pid, tuple(cmdline), paths[-1] if paths else None,
                                           tuple(paths), _create_time(proc), elsewhere)))
    return found


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _shares_our_root(pid: int) -> bool:
    """False when `pid` runs under another root directory (a container, a chroot).

    Linux only (/proc/PID/root; its link text says "/" for a container too, so the
    directory's identity is compared). Elsewhere, or unreadable (not root): True, as
    before, so a process is never hidden from a stop proof for want of a permission.
    """
    if not sys.platform.startswith("linux"):
        return True
    theirs = _file_id(f"/proc/{pid}/root")
    return theirs is None or theirs == _file_id("/proc/self/root")


def _exec_matches(pid: int, exec_id: tuple[int, int]) -> bool:
    """start-stop-daemon's `--exec` test (dpkg's pid_is_exec), for Linux: the path that
    /proc/PID/exe names, less " (deleted)", looked up *here*, is the --exec file.

    Not the executable's own identity: a container's Orthanc reads as /usr/sbin/Orthanc
    (its root is out of our reach), so the host's start-stop-daemon signals it too (seen
    with `start-stop-daemon --stop --test` beside a booted Debian container); a copy of
    the binary at another path is spared.
    """
    try:
        name = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    return _file_id(name.removesuffix(" (deleted)")) == exec_id


def service_processes(target: ServiceTarget) -> list[OrthancProcess]:
    """The live processes of the target: its binary, started with its config, on this host."""
    return [info for _, info in orthanc_processes(target.binary) if info.runs(target.config)]


def other_instances(target: ServiceTarget) -> list[OrthancProcess]:
    """Live processes of the same binary with another config (another Orthanc on this host)."""
    return [info for _, info in orthanc_processes(target.binary) if not info.runs(target.config)]


def exec_collateral(target: ServiceTarget) -> list[OrthancProcess]:
    """The processes besides the target's that `start-stop-daemon --stop --exec BINARY` would
    signal: those of the same executable file by its rule, containers' included."""
    exec_id = _file_id(str(target.binary))
    if exec_id is None or not sys.platform.startswith("linux"):
        return other_instances(target)
    ours = {p.pid for p in service_processes(target)}
    return [info for _, info in orthanc_processes(target.binary, any_root=True)
            if info.pid not in ours and _exec_matches(info.pid, exec_id)]


def other_instances_warning(target: ServiceTarget) -> list[str]:
    """A warning naming the other Orthanc processes on this host (none: an empty list)."""
    others = other_instances(target)
    if not others:
        return []
    return [f"{len(others)} other Orthanc process(es) on this host (not touched): "
            + ", ".join(p.describe() for p in others)]


def is_service_process(pid: int, target: ServiceTarget) -> bool:
    """True when `pid` is alive and is the target's binary started with its config."""
    try:
        proc = psutil.Process(pid)
        cmdline = proc.cmdline()
    except (psutil.Error, OSError):
        return False
    if not cmdline or not _alive(proc) or not _shares_our_root(pid):
        return False
    return bool(_proc_binary_names(proc, cmdline) & _binary_names(target.binary)) and \
        _norm(str(target.config)) in _positional_paths(proc, cmdline)


@dataclass(frozen=True)
class StopProof:
    """What was checked to call the service stopped."""

    processes: tuple[OrthancProcess, ...]
    index_locked: bool | None  # None: no index to check
    pending: tuple[Recorded, ...] = ()  # recorded before the stop and not exited yet

    @property
    def stopped(self) -> bool:
        return not self.pending and not self.processes and not self.index_locked

    def detail(self) -> str:
        parts = []
        if self.pending:
            parts.append("not exited: " + ", ".join(r.describe() for r in self.pending))
        if self.processes:
            parts.append("still alive: " + ", ".join(p.describe() for p in self.processes))
        else:
            parts.append("no process of the binary with this config")
        if self.index_locked is None:
            parts.append("no index to check")
        elif self.index_locked:
            parts.append("the SQLite index is still locked by a process")
        else:
            parts.append("the SQLite index is not locked")
        return "; ".join(parts)


def recorded_processes(target: ServiceTarget) -> tuple[Recorded, ...]:
    """Record the target's live processes (PID and start time) before a stop."""
    return tuple(p.recorded for p in service_processes(target))


def wait_all_gone(recorded: tuple[Recorded, ...] | list[Recorded], timeout: float) -> list[Recorded]:
    """Wait until every recorded process has exited; return those still running at `timeout`.

    Each wait wakes when its process exits (a kernel wait where pidfds exist, not a
    poll), so it runs in real time, not through the Clock.
    """
    deadline = time.monotonic() + max(timeout, 0.0)
    return [r for r in recorded
            if not lifetime.wait_gone(r.pid, r.started_at, max(deadline - time.monotonic(), 0.0))]


def observe_stop(target: ServiceTarget, recorded: tuple[Recorded, ...] = ()) -> StopProof:
    """Check once: the recorded processes' exit, then the target's processes and the index lock."""
    pending = tuple(r for r in recorded if not lifetime.is_gone(r.pid, r.started_at))
    locked = None
    if target.index_dir is not None:
        locked = index_is_locked(target.index_dir)
    return StopProof(tuple(service_processes(target)), locked, pending)


def prove_stopped(target: ServiceTarget, clock: Clock, *, manager: str, grace: float = 5.0,
                  recorded: tuple[Recorded, ...] = ()) -> StopProof:
    """Return the proof once the target is really stopped; raise ServiceError after `grace`.

    `recorded` are the processes seen before the stop: each must have exited (the
    kernel's word, not a scan). The scan and the index lock confirm. The grace covers
    a process that is exiting (releasing the index) at the moment the manager reports
    it gone; a process that lingers past it is an error, not a success.
    """
    last: list[StopProof] = []

    def probe() -> StopProof | None:
        proof = observe_stop(target, recorded)
        last.append(proof)
        return proof if proof.stopped else None

    proof = wait_for(clock, grace, probe)
    if proof is not None:
        return proof
    seen = last[-1]
    pids = [p.pid for p in seen.processes] + [r.pid for r in seen.pending]
    raise ServiceError(
        f"{manager} reports {target.name} stopped, but it is not: {seen.detail()}",
        hint=f"find and stop the process yourself (e.g. kill {pids[0]}), then retry"
        if pids else "another process holds the index: find it with `fuser` or `lsof` "
        f"on {target.index_dir}")
