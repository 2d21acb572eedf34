"""The service port: a service manager whose changes go through `Changes`.

`status()` always observes the real service; `stop()` and `start()` are
changes, described by the manager's own command lines, so a dry run prints the
exact commands a real run would use and neither acts nor waits.
"""

from __future__ import annotations

import shlex
from typing import Any

from orchestrator.host.changes import Changes


class ServicePort:
    """Observe and change one service through its manager."""

    def __init__(self, manager: Any, changes: Changes):
        self.manager = manager
        self.changes = changes

    @property
    def kind(self) -> str:
        return self.manager.kind

    @property
    def name(self) -> str:
        return self.manager.target.name

    def status(self) -> Any:
        return self.manager.status()

    def warnings(self) -> list[str]:
        return list(self.manager.warnings())

    def notes(self) -> list[str]:
        """What the manager had to do during its changes so far (e.g. a SIGKILL), in order."""
        return list(getattr(self.manager, "notes", ()))

    def stop(self, *, timeout: float) -> None:
        """Stop the service; return once it is proven stopped."""
        text = f"stop the {self.kind} service {self.name}: {_commands(self.manager.stop_commands())}"
        self.changes.apply(text, self.manager.stop, timeout=timeout)

    def start(self, *, timeout: float) -> None:
        """Start the service; return once it runs."""
        text = f"start the {self.kind} service {self.name}: {_commands(self.manager.start_commands())}"
        self.changes.apply(text, self.manager.start, timeout=timeout)


def _commands(argvs: list[list[str]]) -> str:
    return "; ".join(shlex.join(a) for a in argvs) or "(no command)"
