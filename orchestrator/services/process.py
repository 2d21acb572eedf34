"""An Orthanc under no service manager: found by pidfile or by binary + config.

For a server started by hand, in a container or by the demo. Stop is SIGTERM,
a wait of `stop_grace`, then SIGKILL; start spawns the binary detached (new
session, output to the log file) and writes the pidfile atomically. A pidfile
is only believed when its PID is the target's binary with the target's config:
a stale pidfile whose PID now belongs to another program never gets a signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from orchestrator.errors import ServiceError
from orchestrator.host.clock import Clock
from orchestrator.host.runner import Runner
from orchestrator.services import proof
from orchestrator.services.base import (SETTLE, ServiceStatus, ServiceTarget, State, read_log_tail,
                                        wait_for)
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


STOP_POLL = 0.05  # seconds between looks while a stopped Orthanc exits


class ProcessManager:
    """Signal and spawn the Orthanc process directly (psutil to observe)."""

    kind = "process"

    def __init__(self, target: ServiceTarget, runner: Runner, clock: Clock, *,
                 settle: float = SETTLE, proof_grace: float = 5.0):
        self.target = target
        self.runner = runner  # unused: signals and spawning are not commands to run to completion
        self.clock = clock
        self.settle = settle
        self.proof_grace = proof_grace
        self.notes: list[str] = []
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
        return [self._argv()]

    def _argv(self) -> list[str]:
        return [str(self.target.binary), str(self.target.config)]

    # -- change ------------------------------------------------------------------
    def stop(self, *, timeout: float) -> None:
        started = self.clock.now()
        pids = self._pids()
        if pids:
            for pid in pids:
                _signal(pid, signal.SIGTERM)
            grace = min(self.target.stop_grace, timeout)
            # Downtime counts from here: look often (a process-table scan costs ~ms).
            gone = wait_for(self.clock, grace, lambda: True if not self._still(pids) else None,
                            interval=STOP_POLL)
            if gone is None:
                stubborn = self._still(pids)
                for pid in stubborn:
                    _signal(pid, signal.SIGKILL)
                self.notes.append(f"PID(s) {stubborn} ignored SIGTERM for {grace:g}s: sent SIGKILL")
                left = max(timeout - (self.clock.now() - started), KILL_WAIT)
                if wait_for(self.clock, left, lambda: True if not self._still(pids) else None) is None:
                    raise ServiceError(f"{self.target.name}: PID(s) {self._still(pids)} survived SIGKILL",
                                       hint="a process stuck in the kernel (D state): check `ps -o stat`")
            self._reap()
        proof.prove_stopped(self.target, self.clock, manager="the process manager",
                            grace=self.proof_grace)
        self._clear_pidfile()

    def _still(self, pids: list[int]) -> list[int]:
        self._reap()
        live = set(self._pids())
        return [p for p in pids if p in live]

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
                f"{self.target.binary} exited with {died} right after start"
                + (f"; log: {tail}" if tail else ""),
                hint=f"see {self.target.log_file or 'its output'}")

    def _spawn(self) -> subprocess.Popen:
        argv = self._argv()
        log_path = self.target.log_file
        kwargs: dict = {}
        if self.target.user and os.name == "posix" and os.geteuid() == 0:
            kwargs["user"] = self.target.user  # drop privileges like the packaged service
        try:
            if log_path is not None:
                Path(log_path).parent.mkdir(parents=True, exist_ok=True)
                log = open(log_path, "ab")
            else:
                log = open(os.devnull, "wb")
            with log:
                child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         close_fds=True, **kwargs)
        except (OSError, ValueError, KeyError) as exc:
            raise ServiceError(f"cannot start {argv[0]}: {exc}",
                               hint="check the binary path, the log file's folder and the user") from exc
        self._child = child
        return child


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        raise ServiceError(f"not allowed to signal PID {pid}",
                           hint="run as root or as the user that owns Orthanc") from exc
