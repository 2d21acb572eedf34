"""Choose the service manager for `manager: auto`, and say why.

Rules, in order: Windows on `nt`; systemd when it is the running init and
knows the unit; SysV when `/etc/init.d/NAME` exists; otherwise the plain
process manager. Every probe only reads, so detection runs in dry-run too.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.errors import CommandError, InputError
from orchestrator.host.clock import Clock
from orchestrator.host.runner import Runner
from orchestrator.services.base import ServiceManager, ServiceTarget
from orchestrator.services.sysv import INIT_D
from orchestrator.services.systemd import PROPERTIES, UnitState, parse_show, unit_name

MANAGER_KINDS = ("systemd", "sysv", "windows", "process")


def _systemd_unit(target: ServiceTarget, runner: Runner) -> tuple[bool, str]:
    """(systemd runs and knows the unit, why) from `systemctl show`, read-only."""
    unit = unit_name(target.name)
    try:
        done = runner.run(["systemctl", "show", "-p", ",".join(PROPERTIES), unit],
                          timeout=15, check=False)
    except CommandError:
        return False, "systemctl is not installed"
    if done.returncode != 0:
        # "System has not been booted with systemd as init system (PID 1). Can't operate."
        return False, "systemd is not the running init"
    state = UnitState.from_props(parse_show(done.stdout))
    if state.load == "loaded":
        return True, f"systemd is the running init and knows {unit} (ActiveState={state.active})"
    return False, f"systemd runs but has no unit {unit} (LoadState={state.load or '?'})"


def detect(target: ServiceTarget, runner: Runner, *, os_name: str = os.name,
           init_d: Path = INIT_D) -> tuple[str, str]:
    """Return (kind, reason) for the target on this host."""
    if os_name == "nt":
        return "windows", "Windows host (os.name is 'nt'): the Service Control Manager, via sc.exe"
    known, why = _systemd_unit(target, runner)
    if known:
        return "systemd", why
    script = Path(init_d) / target.name
    if script.is_file() and os.access(script, os.X_OK):
        return "sysv", f"{why}; init script {script} exists"
    return "process", f"{why}; no init script {script}: managing the process directly"


def make_manager(kind: str, target: ServiceTarget, runner: Runner, clock: Clock, *,
                 options: Mapping[str, Any] | None = None,
                 os_name: str = os.name) -> ServiceManager:
    """Build the manager of `kind` ("auto" detects). `options` go to its constructor.

    Useful options: sysv `script`, `policy_rc_d` (None: do not ask),
    `allow_unscoped_stop`; all: `settle`, `proof_grace`.
    """
    if kind == "auto":
        kind, _ = detect(target, runner, os_name=os_name)
    if kind == "systemd":
        from orchestrator.services.systemd import SystemdManager as cls
    elif kind == "sysv":
        from orchestrator.services.sysv import SysvManager as cls
    elif kind == "windows":
        from orchestrator.services.windows import WindowsScManager as cls
    elif kind == "process":
        from orchestrator.services.process import ProcessManager as cls
    else:
        raise InputError(f"unknown service manager {kind!r}",
                         hint="use one of: auto, " + ", ".join(MANAGER_KINDS))
    # With "auto" the caller cannot know the kind: options another kind takes are dropped.
    accepted = inspect.signature(cls.__init__).parameters
    opts = {k: v for k, v in (options or {}).items() if k in accepted}
    return cls(target, runner, clock, **opts)
