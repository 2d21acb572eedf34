"""The composition root: wire a plan (or an `inspect` target) to this machine.

This is the one place where the plan's service becomes a service manager, its
URL and credential sources a REST client factory, the state folder a journal
and a run lock, and the choice of a dry run a dry host. Everything below
receives these as parameters; `orchestrator.runs` and the CLI call in here.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import InputError, OrchestratorError
from orchestrator.host.clock import Clock, RealClock
from orchestrator.host.host import Host, make_host
from orchestrator.host.runner import RealRunner, Runner
from orchestrator.journal import Journal, MemoryJournal, new_run_id, safe_name
from orchestrator.lock import OrthancLock, RunLock, config_key, index_key
from orchestrator.orthanc.config import OrthancConfig, load_config
from orchestrator.orthanc.credentials import resolve
from orchestrator.orthanc.rest import OrthancClient
from orchestrator.orthanc.survey import Survey, survey
from orchestrator.plan import Plan
from orchestrator.services.base import ServiceManager, ServiceTarget
from orchestrator.services.detect import detect, make_manager
from orchestrator.steps import build, from_journal
from orchestrator.steps.bluegreen.ports import NewService
from orchestrator.steps.base import RunContext

DEFAULT_STATE_DIR = Path("/var/lib/orchestrator")
STATE_ENV = "ORCHESTRATOR_STATE_DIR"
REST_TIMEOUT = (3.0, 30.0)
SURVEY_TIMEOUT = (2.0, 5.0)  # `inspect` only reads two small answers: never hang on a stuck server
# A start only has to survive this long before the health-check that follows it takes over
# (the check proves more: the new PID, listening, answering); without one the manager's own
# settle applies.
CHECKED_SETTLE = 0.2


@dataclass
class WiredRun:
    """Everything one engine call needs to act on a plan."""

    plan: Plan
    steps: list[Any]
    host: Host
    ctx: RunContext
    journal: Journal
    state_dir: Path
    plan_sha256: str
    manager_note: str = ""  # which service manager, and why (shown by plan and run)


def state_dir_for(plan: Plan | None, given: Path | None) -> Path:
    """The state folder: --state-dir, else the plan's state_dir, else $ORCHESTRATOR_STATE_DIR,
    else /var/lib/orchestrator."""
    if given is not None:
        return Path(given)
    if plan is not None and plan.state_dir:
        return Path(plan.state_dir)
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV])
    return DEFAULT_STATE_DIR


def journal_for(state_dir: Path, service: str) -> Journal:
    """The journal of `service`'s runs in `state_dir`."""
    return Journal.for_service(state_dir, service)


def config_reads_variable(config: OrthancConfig, name: str) -> bool:
    """True when a file of the Orthanc configuration substitutes `${name}`."""
    pattern = re.compile(r"\$\{" + re.escape(name) + r"(\}|:-)")
    for path in config.files:
        try:
            if pattern.search(path.read_text("utf-8", "surrogateescape")):
                return True
        except OSError:
            continue
    return False


def orthanc_locks(plan: Plan) -> list[OrthancLock]:
    """The per-Orthanc locks a run holds besides the state folder's: its index (the real path
    of a SQLite index, or the database's identity) and its configuration's real path."""
    locks = [OrthancLock(config_key(Path(plan.service.config)))]
    try:
        config = load_config(plan.service.config)
    except InputError:
        return locks  # the run itself says what is wrong with the configuration
    section = config.values.get({"postgresql": "PostgreSQL", "mysql": "MySQL"}.get(
        config.index_backend, ""), {})
    return [OrthancLock(index_key(config.index_backend, Path(config.index_dir), section)), *locks]


def lock_for(state_dir: Path, service: str) -> RunLock:
    """The run lock of `service` in `state_dir` (not taken yet)."""
    return RunLock.for_service(state_dir, service)


def plan_digest(plan: Plan) -> str:
    """The SHA-256 of the plan file as it is now ("" when it cannot be read)."""
    try:
        return hashlib.sha256(Path(plan.source).read_bytes()).hexdigest()
    except OSError:
        return ""


def open_run(plan: Plan, *, dry: bool, state_dir: Path | None = None, run_id: str | None = None,
             records: dict | None = None, runner: Runner | None = None,
             manager_options: dict | None = None, specs: list | None = None) -> WiredRun:
    """Build the host, steps and context for `plan` (dry: changes are only recorded).

    `specs`: build the steps a journal recorded instead of the plan's (to undo what ran,
    whatever the plan says now). `runner` and `manager_options` (e.g. a SysV `script`)
    are for embedding and tests.
    """
    svc = plan.service
    state = state_dir_for(plan, state_dir)
    config = load_config(svc.config)
    orthanc, hidden = rest_factory(plan, config)
    # A variable the Orthanc configuration itself reads (`${NAME}`) must still reach Orthanc.
    hidden = [name for name in hidden if not config_reads_variable(config, name)]
    runner, clock = runner or RealRunner(hidden_env=hidden), RealClock()
    manager, manager_note = plan_manager(plan, config, runner, clock, manager_options)
    steps = from_journal(specs) if specs else build(plan)
    peer, peer_port = peer_manager(steps, runner, clock)
    host = make_host(dry=dry, manager=manager, orthanc=orthanc, runner=runner, clock=clock,
                     hidden_env=hidden, peer=peer,
                     http_ports=(http_port(config), peer_port))
    host.files.add_private_root(state)
    run_id = run_id or new_run_id()
    ctx = RunContext(plan=plan, run_id=run_id,
                     run_dir=state / safe_name(svc.name) / run_id, records=dict(records or {}))
    journal = MemoryJournal() if dry else journal_for(state, svc.name)
    return WiredRun(plan, steps, host, ctx, journal, state, plan_digest(plan), manager_note)


def http_port(config: OrthancConfig) -> int | None:
    """The port a stopping Orthanc is poked on (host/wake.py), None when it serves no HTTP."""
    return config.http_port if config.http_enabled else None


def peer_manager(steps: list[Any], runner: Runner,
                 clock: Clock) -> tuple[ServiceManager | None, int | None]:
    """The manager of the second service a step names (a blue/green `ports` switch's new
    server) and its HTTP port, or (None, None)."""
    for step in steps:
        new = getattr(step.options, "new_service", None)
        if isinstance(new, NewService):
            try:
                config = load_config(new.config)
            except InputError as exc:
                raise InputError(f"{step.id}.new_service.config: {exc.message}",
                                 hint=exc.hint) from None
            target = ServiceTarget(
                name=new.name, binary=Path(new.binary), config=Path(new.config),
                index_dir=Path(config.index_dir) if config.index_backend == "sqlite" else None,
                pidfile=new.pidfile, log_file=new.log_file, user=new.user,
                stop_grace=float(new.stop_grace))
            return service_manager(target, new.manager, runner, clock)[0], http_port(config)
    return None, None


def plan_manager(plan: Plan, config: OrthancConfig, runner: Runner, clock: Clock,
                 options: dict | None) -> tuple[ServiceManager, str]:
    """The plan's service manager, and a note saying which one and why."""
    svc = plan.service
    kinds = [s.kind for s in plan.steps]
    starts = [i for i, k in enumerate(kinds) if k == "start-service"]
    if starts and all("health-check" in kinds[i + 1:] for i in starts):
        options = {"settle": CHECKED_SETTLE, **(options or {})}
    # SysV keys of the plan (make_manager drops them for other managers).
    sysv: dict[str, Any] = {"allow_unscoped_stop": svc.allow_unscoped_stop}
    if svc.init_script is not None:
        sysv["script"] = Path(svc.init_script)
    options = {**sysv, **(options or {})}
    target = ServiceTarget(
        name=svc.name, binary=Path(svc.binary), config=Path(svc.config),
        index_dir=Path(config.index_dir) if config.index_backend == "sqlite" else None,
        pidfile=svc.pidfile, log_file=svc.log_file, user=svc.user,
        install_dir=svc.install_dir, stop_grace=float(svc.stop_grace))
    return service_manager(target, str(svc.manager), runner, clock, options,
                           chosen_by="as the plan says")


def service_manager(target: ServiceTarget, kind: str, runner: Runner, clock: Clock,
                    options: Mapping[str, Any] | None = None, *,
                    chosen_by: str = "as asked") -> tuple[ServiceManager, str]:
    """The manager of `kind` for `target` ("auto" detects it), and a note saying which and why."""
    if kind == "auto":
        kind, reason = detect(target, runner)
        note = f"service manager: {kind}, detected: {reason}"
    else:
        note = f"service manager: {kind}, {chosen_by}"
    return make_manager(kind, target, runner, clock, options=options), note


def rest_factory(plan: Plan, config: OrthancConfig) -> tuple[Callable[[], OrthancClient], list[str]]:
    """A factory of REST clients for the plan's service, and the environment variables
    that hold its secrets (kept from every child process)."""
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
    verify = _verify_tls(config, url)

    def factory() -> OrthancClient:
        return OrthancClient(clean, credentials, verify=verify, timeout=REST_TIMEOUT)

    return factory, hidden


def local_client(config: OrthancConfig) -> OrthancClient | None:
    """A REST client for the Orthanc this config serves on loopback (credentials from
    ~/.netrc only), or None when its URL cannot be used."""
    try:
        clean, credentials = resolve(config.local_url)
    except OrchestratorError:
        return None
    return OrthancClient(clean, credentials, verify=_verify_tls(config, config.local_url),
                         timeout=SURVEY_TIMEOUT)


def survey_installation(config_path: Path, *, binary: Path | None, service: str,
                        default_binary: Path) -> Survey:
    """Wire `inspect`: survey the installation at `config_path` with a real runner, the
    detected manager of `service` (observing only) and a loopback REST client."""
    runner = RealRunner()

    def service_view(config: OrthancConfig) -> dict:
        target = ServiceTarget(name=service, binary=binary or default_binary,
                               config=Path(config.path),
                               index_dir=config.index_dir if config.index_backend == "sqlite"
                               else None)
        view: dict[str, Any] = {"name": service}
        try:
            kind, reason = detect(target, runner)
            view.update(manager=kind, detected=reason)
            manager = make_manager(kind, target, runner, RealClock())
            status = manager.status()
            view.update(state=status.state.value, main_pid=status.main_pid, detail=status.detail,
                        warnings=manager.warnings())
        except OrchestratorError as exc:
            view["error"] = exc.message
        return view

    return survey(config_path, binary=binary, runner=runner, service_probe=service_view,
                  client_for=local_client)


def _verify_tls(config: OrthancConfig, url: str) -> bool:
    # A local health check on a self-signed certificate: the service is ours, on loopback.
    return not (config.ssl and url.startswith("https://127.0.0.1"))
