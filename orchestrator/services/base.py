"""The service-manager contract: what a service is, its observed state, and the interface.

Observing (`status`) and changing (`stop`, `start`) are separate methods. A
change returns only once its state is reached (and, for a stop, proven), or
raises `ServiceError`; a wait always belongs to the change it waits for, and
every wait polls through the Clock port.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Protocol, TypeVar

from orchestrator.host.clock import Clock

POLL = 0.25  # seconds between two observations while waiting for a state
SETTLE = 1.0  # a start must still be alive this long after it was reported running


class State(Enum):
    """What a service manager says about the service (closed set)."""

    RUNNING = "running"
    STOPPED = "stopped"
    STARTING = "starting"
    STOPPING = "stopping"
    FAILED = "failed"  # not running, and the manager recorded a failure
    UNKNOWN = "unknown"  # the manager could not say (no such unit, no answer)


@dataclass(frozen=True)
class ServiceStatus:
    """One observation of the service: its state, main PID and a human detail."""

    state: State
    main_pid: int | None = None
    detail: str = ""

    @property
    def running(self) -> bool:
        return self.state in (State.RUNNING, State.STARTING, State.STOPPING)

    def to_dict(self) -> dict:
        return {"state": self.state.value, "main_pid": self.main_pid, "detail": self.detail}


@dataclass(frozen=True)
class ServiceTarget:
    """The Orthanc service a manager acts on, as the plan describes it."""

    name: str  # systemd unit / init script / Windows service name
    binary: Path
    config: Path  # a file or a folder, exactly as given to Orthanc
    index_dir: Path | None = None  # where the SQLite `index` lives (proof of stop)
    pidfile: Path | None = None
    log_file: Path | None = None  # a file, or a folder of log files (--logdir)
    user: str | None = None
    install_dir: str | None = None  # Windows: where Orthanc.exe runs from
    stop_grace: float = 30.0  # seconds between SIGTERM and SIGKILL (process manager)

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


class ServiceManager(Protocol):
    """One way of running the service: systemd, sysv, windows or process."""

    kind: str
    target: ServiceTarget

    def status(self) -> ServiceStatus:
        """Observe the service (runs in dry-run too)."""
        ...

    def stop(self, *, timeout: float) -> None:
        """Stop the service; return once stopped and proven stopped, else raise ServiceError."""
        ...

    def start(self, *, timeout: float) -> None:
        """Start the service; return once running and still alive after a short settle."""
        ...

    def stop_commands(self) -> list[list[str]]:
        """The argv(s) `stop()` would run, for the dry-run text."""
        ...

    def start_commands(self) -> list[list[str]]:
        """The argv(s) `start()` would run, for the dry-run text."""
        ...

    def warnings(self) -> list[str]:
        """Hazards worth showing before any change (other Orthanc processes, unscoped scripts)."""
        ...


T = TypeVar("T")


def wait_for(clock: Clock, timeout: float, probe: Callable[[], T | None], *,
             interval: float = POLL) -> T | None:
    """Call `probe` until it returns something other than None, or `timeout` passes.

    The probe always runs at least once, and once more at the deadline, so a
    zero timeout still observes. Returns the probe's last answer (None on time-out).
    """
    deadline = clock.now() + max(timeout, 0.0)
    while True:
        found = probe()
        if found is not None:
            return found
        left = deadline - clock.now()
        if left <= 0:
            return None
        clock.sleep(min(interval, left))


def tail_text(text: str, lines: int = 8) -> str:
    """The last non-empty lines of a text, joined on one line for an error message."""
    kept = [ln.rstrip() for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(kept[-lines:])


def read_log_tail(path: Path | None, lines: int = 8) -> str:
    """The last lines of a log file, or of the newest file of a log folder ('' if none)."""
    if path is None:
        return ""
    p = Path(path)
    try:
        if p.is_dir():
            files = [f for f in p.iterdir() if f.is_file()]
            if not files:
                return ""
            p = max(files, key=lambda f: f.stat().st_mtime)
        with open(p, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            data = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return tail_text(data, lines)
