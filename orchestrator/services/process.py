"""An Orthanc under no service manager: found by pidfile or by binary + config.

For a server started by hand, in a container or by the demo. Stop records the
processes (PID and start time) and how the main one was launched (its argv and
working folder), sends SIGTERM, waits for each recorded process to exit (woken
by the kernel, `lifetime`), then SIGKILL after `stop_grace`. Start spawns the
binary detached (new session, output to the log file) with the recorded
arguments and working folder, so an Orthanc started with `--logdir=...` from
its install folder comes back the same way, and writes the pidfile atomically.
A pidfile is only believed when its PID is the target's binary with the
target's config: a stale pidfile whose PID now belongs to another program never
gets a signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from orchestrator.errors import ServiceError
from orchestrator.host.clock import Clock
from orchestrator.host.runner import Runner, child_env
from orchestrator.services import lifetime, proof
from orchestrator.services.base import (SETTLE, ServiceStatus, ServiceTarget, State, read_log_tail,
                                        wait_for)
from orchestrator.services.lifetime import Recorded
from orchestrator.services.sysv import read_pidfile

KILL_WAIT = 10.0  # seconds to wait for the kernel after SIGKILL


def write_pidfile(path: Path, pid: int) -> None:
    """Write `pid` to `path` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        fh.write(f"{pid}\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class Launch:
    """How the running Orthanc was started: its argv and working folder (read at stop time)."""

    argv: tuple[str, ...]
    cwd: str | None = None

    def to_dict(self) -> dict:
        return {"argv": list(self.argv), "cwd": self.cwd}

    @classmethod
    def from_dict(cls, data: dict | None) -> Launch | None:
        if not data or not data.get("argv"):
            return None
        return cls(tuple(str(a) for a in data["argv"]), data.get("cwd"))


def read_launch(pid: int) -> Launch | None:
    """The argv and cwd of live process `pid` (None when unreadable or already exiting)."""
    try:
        proc = psutil.Process(pid)
        argv = proc.cmdline()
        cwd = proc.cwd()
    except (psutil.Error, OSError):
        return None
    return Launch(tuple(argv), cwd or None) if argv else None


class ProcessManager:
    """Signal and spawn the Orthanc process directly (psutil to observe)."""

    kind = "process"

    def __init__(self, target: ServiceTarget, runner: Runner, clock: Clock, *,
                 settle: float = SETTLE, proof_grace: float = 5.0, launch: Launch | None = None):
        self.target = target
        self.runner = runner  # unused: signals and spawning are not commands to run to completion
        self.clock = clock
        self.settle = settle
        self.proof_grace = proof_grace
        self.notes: list[str] = []
        # How to start it again: recorded by stop() from the running process, or given
        # (e.g. from a journal) by a later run that must start what an earlier one stopped.
        self.launch = launch
        self.as_launched = False  # start() restarts launch's own argv (set when undoing a stop)
        self.stopped: tuple[Recorded, ...] = ()  # what the last stop() proved gone
        self._child: subprocess.Popen | None = None

    # -- observe -----------------------------------------------------------------
    def _pids(self) -> list[int]:
        return [p.pid for p in proof.service_processes(self.target)]

    def status(self) -> ServiceStatus:
        pidfile = self.target.pidfile
        recorded = read_pidfile(pidfile)
        pids = self._pids()
        notes = []
        if recorded is not None and recorded not in pids:
            if _exists(recorded):
                notes.append(f"pidfile {pidfile} names PID {recorded}, which is another program: ignored")
            else:
                notes.append(f"stale pidfile {pidfile} (PID {recorded} is gone)")
        if pids:
            main = recorded if recorded in pids else pids[0]
            if len(pids) > 1:
                notes.append(f"{len(pids)} processes with this config: {pids}")
            return ServiceStatus(State.RUNNING, main, "; ".join(notes) or f"PID {main}")
        return ServiceStatus(State.STOPPED, None,
                             "; ".join(notes) or "no process of the binary with this config")

    def warnings(self) -> list[str]:
        return proof.other_instances_warning(self.target)

    def stop_commands(self) -> list[list[str]]:
        return [["kill", "-TERM", str(pid)] for pid in self._pids()]

    def start_commands(self) -> list[list[str]]:
        return [self._argv(self.launch or self._running_launch())]

    def _running_launch(self) -> Launch | None:
        """How the running service was launched (what start() would reuse after a stop)."""
        pids = self._pids()
        recorded = read_pidfile(self.target.pidfile)
        main = recorded if recorded in pids else (pids[0] if pids else None)
        return read_launch(main) if main else None

    def _argv(self, launch: Launch | None = None) -> list[str]:
        # Undoing a stop restarts exactly what ran, its own binary included: a plan whose
        # `binary:` points at a newer Orthanc must not bring that one back on the restored copy.
        if launch is not None and self.as_launched:
            return list(launch.argv)
        # Forwards: the plan's binary (a package upgrade replaces it in place), the original
        # arguments.
        if launch is not None and len(launch.argv) > 1:
            return [str(self.target.binary), *launch.argv[1:]]
        return [str(self.target.binary), str(self.target.config)]

    # -- change ------------------------------------------------------------------
    def stop(self, *, timeout: float) -> None:
        found = proof.service_processes(self.target)
        recorded = tuple(p.recorded for p in found)
        if found:
            main = read_pidfile(self.target.pidfile)
            main = main if main in [p.pid for p in found] else found[0].pid
            self.launch = read_launch(main) or self.launch
            for r in recorded:
                _signal(r, signal.SIGTERM)
            grace = min(self.target.stop_grace, timeout)
            # Downtime counts from here: each wait wakes when its process exits.
            stubborn = proof.wait_all_gone(recorded, grace)
            if stubborn:
                for r in stubborn:
                    _signal(r, signal.SIGKILL)
                self.notes.append(f"PID(s) {[r.pid for r in stubborn]} ignored SIGTERM for "
                                  f"{grace:g}s: sent SIGKILL")
                left = max(timeout - grace, KILL_WAIT)
                survivors = proof.wait_all_gone(stubborn, left)
                if survivors:
                    raise ServiceError(f"{self.target.name}: PID(s) {[r.pid for r in survivors]} "
                                       "survived SIGKILL",
                                       hint="a process stuck in the kernel (D state): check `ps -o stat`")
            self._reap()
        proof.prove_stopped(self.target, self.clock, manager="the process manager",
                            grace=self.proof_grace, recorded=recorded)
        self.stopped = recorded
        self._clear_pidfile()

    def _reap(self) -> None:
        if self._child is not None and self._child.poll() is not None:
            self._child = None

    def _clear_pidfile(self) -> None:
        pidfile = self.target.pidfile
        recorded = read_pidfile(pidfile)
        if pidfile is not None and recorded is not None and not proof.is_service_process(recorded, self.target):
            try:
                Path(pidfile).unlink()
            except OSError:
                pass

    def start(self, *, timeout: float) -> None:
        pids = self._pids()
        if pids:
            if self.target.pidfile is not None and read_pidfile(self.target.pidfile) not in pids:
                write_pidfile(self.target.pidfile, pids[0])
            return
        child = self._spawn()
        if self.target.pidfile is not None:
            write_pidfile(self.target.pidfile, child.pid)
        # Alive after a short settle? (HTTP health is checked by a later step.)
        died = wait_for(self.clock, self.settle,
                        lambda: child.returncode if child.poll() is not None else None)
        if died is not None:
            self._child = None
            tail = read_log_tail(self.target.log_file)
            raise ServiceError(
                f"{child.args[0]} exited with {died} right after start"
                + (f"; log: {tail}" if tail else ""),
                hint=f"see {self.target.log_file or 'its output'}")

    def _spawn(self) -> subprocess.Popen:
        argv = self._argv(self.launch)
        log_path = self.target.log_file
        kwargs: dict = {}
        if self.launch is not None and self.launch.cwd:
            kwargs["cwd"] = self.launch.cwd  # relative arguments (config, --logdir) resolve as before
        if self.target.user and os.name == "posix" and os.geteuid() == 0:
            kwargs["user"] = self.target.user  # drop privileges like the packaged service
        try:
            if log_path is not None:
                Path(log_path).parent.mkdir(parents=True, exist_ok=True)
                log = open(log_path, "ab")
            else:
                log = open(os.devnull, "wb")
            with log:
                # The tool's own secrets (the REST password's variable) never reach Orthanc.
                child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         close_fds=True,
                                         env=child_env(getattr(self.runner, "hidden_env", ())),
                                         **kwargs)
        except (OSError, ValueError, KeyError) as exc:
            raise ServiceError(f"cannot start {argv[0]}: {exc}",
                               hint="check the binary path, the log file's folder, the user and the "
                               f"working folder ({kwargs.get('cwd', os.getcwd())})") from exc
        _await_arguments(child)
        self._child = child
        return child


def _await_arguments(child: subprocess.Popen, limit: float = 1.0) -> None:
    """Return once the child's command line is in place (or it ended, or `limit` passed).

    Popen returns once the exec began, a moment before the kernel puts the new arguments
    in place (seen: 2 of 300 starts read an empty command line right after Popen): a
    status() at once would find no process of this config and call the service stopped.
    """
    deadline = time.monotonic() + limit
    while child.poll() is None and time.monotonic() < deadline:
        try:
            if psutil.Process(child.pid).cmdline():
                return
        except psutil.Error:
            return
        time.sleep(0.001)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal(recorded: Recorded, sig: int) -> None:
    """Signal the recorded process, never a later owner of its PID."""
    try:
        proc = psutil.Process(recorded.pid)
        if recorded.started_at is not None and \
                abs(proc.create_time() - recorded.started_at) > lifetime.SAME_START:
            return  # it exited and the PID was reused
        proc.send_signal(sig)
    except psutil.NoSuchProcess:
        pass
    except psutil.AccessDenied as exc:
        raise ServiceError(f"not allowed to signal PID {recorded.pid}",
                           hint="run as root or as the user that owns Orthanc") from exc
