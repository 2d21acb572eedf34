"""Wire a plan to this machine: the host (real or dry), the steps, the journal and the lock.

This is where the plan's service becomes a service manager, its URL and
credential sources a REST client factory, and the state folder a journal.
Everything else receives these as parameters.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import InputError
from orchestrator.journal import Journal, MemoryJournal, new_run_id, safe_name
from orchestrator.steps.base import RunContext

DEFAULT_STATE_DIR = Path("/var/lib/orchestrator")
STATE_ENV = "ORCHESTRATOR_STATE_DIR"
REST_TIMEOUT = (3.0, 30.0)
# A start only has to survive this long before the health-check that follows it takes over
# (the check proves more: the new PID, listening, answering); without one the manager's own
# settle applies.
CHECKED_SETTLE = 0.2


@dataclass
class Run:
    """Everything one command needs to act on a plan."""

    plan: Any
    steps: list[Any]
    host: Any
    ctx: RunContext
    journal: Journal
    state_dir: Path
    plan_sha256: str
    manager_note: str = ""  # which service manager, and why (shown by plan and run)


def state_dir_for(plan: Any | None, given: Path | None) -> Path:
    """The state folder: --state-dir, else the plan's state_dir, else $ORCHESTRATOR_STATE_DIR,
    else /var/lib/orchestrator."""
    if given is not None:
        return Path(given)
    if plan is not None and getattr(plan, "state_dir", None):
        return Path(plan.state_dir)
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV])
    return DEFAULT_STATE_DIR


def journal_for(state_dir: Path, service: str) -> Journal:
    return Journal.for_service(state_dir, service)


def plan_digest(plan: Any) -> str:
    try:
        return hashlib.sha256(Path(plan.source).read_bytes()).hexdigest()
    except OSError:
        return ""


def open_run(plan: Any, *, dry: bool, state_dir: Path | None = None, run_id: str | None = None,
             records: dict | None = None, runner: Any = None,
             manager_options: dict | None = None) -> Run:
    """Build the host, steps and context for `plan` (dry: changes are only recorded).

    `runner` and `manager_options` (e.g. a SysV `script`) are for embedding and tests.
    """
    from orchestrator.host.clock import RealClock
    from orchestrator.host.host import make_host
    from orchestrator.host.runner import RealRunner
    from orchestrator.orthanc.config import load_config
    from orchestrator.steps import build

    svc = plan.service
    state = state_dir_for(plan, state_dir)
    config = load_config(svc.config)
    runner, clock = runner or RealRunner(), RealClock()
    manager, manager_note = _manager(plan, config, runner, clock, manager_options)
    orthanc, hidden = _rest_factory(plan, config)
    host = make_host(dry=dry, manager=manager, orthanc=orthanc, runner=runner, clock=clock,
                     hidden_env=hidden)
    run_id = run_id or new_run_id()
    ctx = RunContext(plan=plan, run_id=run_id,
                     run_dir=state / safe_name(svc.name) / run_id, records=dict(records or {}))
    journal = MemoryJournal() if dry else journal_for(state, svc.name)
    return Run(plan, build(plan), host, ctx, journal, state, plan_digest(plan), manager_note)


def _manager(plan: Any, config: Any, runner: Any, clock: Any,
             options: dict | None) -> tuple[Any, str]:
    """The plan's service manager, and a note saying which one and why."""
    from orchestrator.services.base import ServiceTarget
    from orchestrator.services.detect import detect, make_manager

    svc = plan.service
    kinds = [s.kind for s in plan.steps]
    starts = [i for i, k in enumerate(kinds) if k == "start-service"]
    if starts and all("health-check" in kinds[i + 1:] for i in starts):
        options = {"settle": CHECKED_SETTLE, **(options or {})}
    # SysV keys of the plan (make_manager drops them for other managers).
    sysv = {"allow_unscoped_stop": svc.allow_unscoped_stop}
    if svc.init_script is not None:
        sysv["script"] = Path(svc.init_script)
    options = {**sysv, **(options or {})}
    target = ServiceTarget(
        name=svc.name, binary=Path(svc.binary), config=Path(svc.config),
        index_dir=Path(config.index_dir) if config.index_backend == "sqlite" else None,
        pidfile=svc.pidfile, log_file=svc.log_file, user=svc.user,
        install_dir=svc.install_dir, stop_grace=float(svc.stop_grace))
    kind = str(svc.manager)
    if kind == "auto":
        kind, reason = detect(target, runner)
        note = f"service manager: {kind}, detected: {reason}"
    else:
        note = f"service manager: {kind}, as the plan says"
    return make_manager(kind, target, runner, clock, options=options), note


def _rest_factory(plan: Any, config: Any) -> tuple[Any, list[str]]:
    from orchestrator.orthanc.credentials import resolve
    from orchestrator.orthanc.rest import OrthancClient

    svc = plan.service
    creds = svc.credentials
    url = svc.url or config.local_url
    try:
        clean, credentials = resolve(url, username=creds.username if creds else None,
                                     password_env=creds.password_env if creds else None,
                                     password_file=creds.password_file if creds else None)
    except InputError as exc:
        raise InputError(f"service.credentials: {exc.message}", hint=exc.hint) from None
    hidden = [creds.password_env] if creds and creds.password_env else []
    # A local health check on a self-signed certificate: the service is ours, on loopback.
    verify = not (config.ssl and url.startswith("https://127.0.0.1"))

    def factory() -> Any:
        return OrthancClient(clean, credentials, verify=verify, timeout=REST_TIMEOUT)

    return factory, hidden
