"""The service port: a service manager whose changes go through `Changes`.

`status()` observes the real service; `stop()` and `start()` are changes,
described by the manager's own command lines, so a dry run prints the exact
commands a real run would use and neither acts nor waits. After a dry run's
stop or start, `status()` says what that change would have left (running or
not), so that later steps plan on the state the run would really meet.
While a stop runs, Orthanc's HTTP port (when known) is poked so that it exits
at once instead of on its web server's 2 s poll (wake.py).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from enum import Enum
from typing import Any

from orchestrator.host.changes import Changes
from orchestrator.host.wake import waking


class ServicePort:
    """Observe and change one service through its manager."""

    def __init__(self, manager: Any, changes: Changes, *, http_port: int | None = None):
        self.manager = manager
        self.changes = changes
        self.http_port = http_port  # the service's Orthanc HTTP port on this host, if any
        self._would_run: bool | None = None  # a dry run's stop (False) or start (True)

    @property
    def kind(self) -> str:
        return self.manager.kind

    @property
    def name(self) -> str:
        return self.manager.target.name

    def status(self) -> Any:
        real = self.manager.status()
        if self._would_run is None or real.running == self._would_run:
            return real
        state = type(real.state)["RUNNING" if self._would_run else "STOPPED"]
        return WouldBe(state, real.main_pid if self._would_run else None,
                       f"as the dry run's earlier {'start' if self._would_run else 'stop'} "
                       "would leave it")

    def warnings(self) -> list[str]:
        return list(self.manager.warnings())

    def notes(self) -> list[str]:
        """What the manager had to do during its changes so far (e.g. a SIGKILL), in order."""
        return list(getattr(self.manager, "notes", ()))

    def stop(self, *, timeout: float) -> None:
        """Stop the service; return once it is proven stopped."""
        text = f"stop the {self.kind} service {self.name}: {_commands(self.manager.stop_commands())}"
        self.changes.apply(text, self._stop, timeout,
                           simulate=lambda: self._would(False))

    def _stop(self, timeout: float) -> None:
        with waking(self.http_port):
            self.manager.stop(timeout=timeout)

    def start(self, *, timeout: float) -> None:
        """Start the service; return once it runs."""
        text = f"start the {self.kind} service {self.name}: {_commands(self.manager.start_commands())}"
        self.changes.apply(text, self.manager.start, timeout=timeout,
                           simulate=lambda: self._would(True))

    def _would(self, running: bool) -> None:
        self._would_run = running


@dataclass(frozen=True)
class WouldBe:
    """A dry run's status of the service: what its earlier changes would have left."""

    state: Enum  # the manager's own State member
    main_pid: int | None
    detail: str

    @property
    def running(self) -> bool:
        return self.state.name == "RUNNING"

    def to_dict(self) -> dict:
        return {"state": self.state.value, "main_pid": self.main_pid, "detail": self.detail}


def _commands(argvs: list[list[str]]) -> str:
    return "; ".join(shlex.join(a) for a in argvs) or "(no command)"
