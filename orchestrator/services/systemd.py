"""The service under systemd: `systemctl show/stop/start`, journal lines on failure.

`Type=simple` units (Debian's orthanc.service) are "active" as soon as the
process is spawned, so `systemctl start` returns 0 even when Orthanc dies a
second later: `start()` watches the main PID and the restart counter through a
short settle before it calls the start good. HTTP health is a later step.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.errors import CommandError, ServiceError
from orchestrator.host.clock import Clock
from orchestrator.host.runner import Runner
from orchestrator.services import proof
from orchestrator.services.base import SETTLE, ServiceStatus, ServiceTarget, State, wait_for

PROPERTIES = ("LoadState", "ActiveState", "SubState", "MainPID", "Result", "ExecMainStatus",
              "NRestarts", "InvocationID")
QUERY_TIMEOUT = 30.0

_ACTIVE = {"active": State.RUNNING, "reloading": State.RUNNING, "activating": State.STARTING,
           "deactivating": State.STOPPING, "inactive": State.STOPPED, "failed": State.FAILED}


def parse_show(text: str) -> dict[str, str]:
    """Parse `systemctl show -p A,B NAME` output (KEY=VALUE lines, any order)."""
    props = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            props[key.strip()] = value.strip()
    return props


@dataclass(frozen=True)
class UnitState:
    """The properties of a unit that matter here, typed."""

    load: str
    active: str
    sub: str
    main_pid: int
    result: str
    exec_status: int | None
    restarts: int

    @classmethod
    def from_props(cls, props: dict[str, str]) -> UnitState:
        def num(key: str) -> int | None:
            value = props.get(key, "")
            return int(value) if value.lstrip("-").isdigit() else None

        return cls(load=props.get("LoadState", ""), active=props.get("ActiveState", ""),
                   sub=props.get("SubState", ""), main_pid=num("MainPID") or 0,
                   result=props.get("Result", ""), exec_status=num("ExecMainStatus"),
                   restarts=num("NRestarts") or 0)

    @property
    def state(self) -> State:
        if self.load == "not-found":
            return State.UNKNOWN
        if self.active == "activating" and self.sub == "auto-restart":
            return State.FAILED  # dead, waiting to be restarted by Restart=
        return _ACTIVE.get(self.active, State.UNKNOWN)

    def detail(self) -> str:
        text = f"ActiveState={self.active} SubState={self.sub} Result={self.result}"
        if self.exec_status:
            text += f" ExecMainStatus={self.exec_status}"
        if self.restarts:
            text += f" NRestarts={self.restarts}"
        if self.load and self.load != "loaded":
            text = f"LoadState={self.load} " + text
        return text

    def to_status(self) -> ServiceStatus:
        return ServiceStatus(self.state, self.main_pid or None, self.detail())


def unit_name(name: str) -> str:
    """`orthanc` -> `orthanc.service`; a name with a unit suffix is kept."""
    return name if "." in name else f"{name}.service"


class SystemdManager:
    """Drive the service through `systemctl`; every command goes through the Runner."""

    kind = "systemd"

    def __init__(self, target: ServiceTarget, runner: Runner, clock: Clock, *,
                 settle: float = SETTLE, proof_grace: float = 5.0):
        self.target = target
        self.runner = runner
        self.clock = clock
        self.settle = settle
        self.proof_grace = proof_grace
        self.unit = unit_name(target.name)
        self.notes: list[str] = []  # what a successful change had to do (shown by the engine)

    # -- observe -----------------------------------------------------------------
    def unit_state(self) -> UnitState:
        argv = ["systemctl", "show", "-p", ",".join(PROPERTIES), self.unit]
        try:
            done = self.runner.run(argv, timeout=QUERY_TIMEOUT)
        except CommandError as exc:
            raise ServiceError(f"cannot read the state of {self.unit}: {exc.message}",
                               hint="is systemd the running init? (`systemctl is-system-running`)",
                               completed=exc.completed) from exc
        return UnitState.from_props(parse_show(done.stdout))

    def status(self) -> ServiceStatus:
        unit = self.unit_state()
        status = unit.to_status()
        if unit.load == "not-found":
            return ServiceStatus(State.UNKNOWN, None, f"systemd has no unit {self.unit}")
        return status

    def journal_tail(self, lines: int = 10) -> str:
        """The last journal lines of the unit, on one line ('' when the journal says nothing)."""
        argv = ["journalctl", "-u", self.unit, "-n", str(lines), "--no-pager", "-o", "cat"]
        try:
            done = self.runner.run(argv, timeout=QUERY_TIMEOUT, check=False)
        except CommandError:
            return ""
        kept = [ln.strip() for ln in done.stdout.splitlines()
                if ln.strip() and not ln.startswith("-- ")]
        return " | ".join(kept[-lines:])

    def warnings(self) -> list[str]:
        return proof.other_instances_warning(self.target)

    def stop_commands(self) -> list[list[str]]:
        return [["systemctl", "stop", self.unit]]

    def start_commands(self) -> list[list[str]]:
        return [["systemctl", "start", self.unit]]

    # -- change ------------------------------------------------------------------
    def _fail(self, message: str, hint: str, completed=None) -> ServiceError:
        journal = self.journal_tail()
        if journal:
            message = f"{message}; journal: {journal}"
        return ServiceError(message, hint=hint, completed=completed)

    def _require_unit(self, unit: UnitState) -> None:
        if unit.load == "not-found":
            raise ServiceError(f"systemd has no unit {self.unit}",
                               hint="check the plan's service name (`systemctl list-units 'orthanc*'`)")

    def stop(self, *, timeout: float) -> None:
        started = self.clock.now()
        unit = self.unit_state()
        self._require_unit(unit)
        # Recorded before the stop (PID and start time), as this host's process table shows
        # them: the MainPID when it is visible here as the target's process, and every other
        # process of the target (a sandbox's MainPID is a namespace PID, invisible here).
        recorded = proof.recorded_processes(self.target)
        main = next((r for r in recorded if r.pid == unit.main_pid), None)
        # ActiveState, not the mapped State: a unit in activating/auto-restart looks dead but
        # has a restart pending, which only `systemctl stop` cancels.
        ran = unit.active not in ("inactive", "failed") or bool(unit.main_pid)
        if ran:
            argv = self.stop_commands()[0]
            try:
                self.runner.run(argv, timeout=timeout)
            except CommandError as exc:
                done = exc.completed
                if done is not None and done.returncode == -1:
                    raise self._fail(
                        f"{self.unit} did not stop within {timeout:.0f}s (systemd keeps trying: "
                        "it sends SIGKILL after the unit's TimeoutStopSec)",
                        hint=f"see `journalctl -u {self.unit}`; `systemctl kill -s KILL {self.unit}` "
                        "ends it at once", completed=done) from exc
                raise self._fail(f"systemctl stop {self.unit} failed: {exc.message}",
                                 hint=f"see `systemctl status {self.unit}`",
                                 completed=done) from exc
        left = timeout - (self.clock.now() - started)
        final = wait_for(self.clock, left, self._stopped_state)
        if final is None:
            unit = self.unit_state()
            raise self._fail(f"{self.unit} is still {unit.active} ({unit.sub}) "
                             f"{timeout:.0f}s after the stop", hint=f"see `systemctl status {self.unit}`")
        if ran and final.result == "timeout":
            self.notes.append(f"{self.unit} ignored SIGTERM: systemd killed it after its "
                              "TimeoutStopSec (Result=timeout)")
        if main is not None:
            # systemd has normally reaped it already; if not, this wakes when it exits.
            proof.wait_all_gone([main], max(timeout - (self.clock.now() - started), 0.0))
        proof.prove_stopped(self.target, self.clock, manager=f"systemd ({self.unit})",
                            grace=self.proof_grace, recorded=recorded)

    def _stopped_state(self) -> UnitState | None:
        unit = self.unit_state()
        return unit if unit.active in ("inactive", "failed") else None

    def start(self, *, timeout: float) -> None:
        started = self.clock.now()
        unit = self.unit_state()
        self._require_unit(unit)
        if unit.state == State.RUNNING and unit.main_pid:
            return
        if unit.active == "failed" or unit.result not in ("", "success"):
            # A failed unit (start-limit-hit after a crash loop) refuses `start` until reset.
            self.runner.run(["systemctl", "reset-failed", self.unit], timeout=QUERY_TIMEOUT, check=False)
            self.notes.append(f"reset the failed state of {self.unit} (was Result={unit.result})")
        argv = self.start_commands()[0]
        try:
            self.runner.run(argv, timeout=timeout)
        except CommandError as exc:
            raise self._fail(f"systemctl start {self.unit} failed: {exc.message}",
                             hint=f"see `systemctl status {self.unit}`",
                             completed=exc.completed) from exc
        left = timeout - (self.clock.now() - started)
        first = wait_for(self.clock, left, self._running_or_dead)
        if first is None:
            unit = self.unit_state()
            raise self._fail(f"{self.unit} is still {unit.active} ({unit.sub}) "
                             f"{timeout:.0f}s after the start", hint=f"see `systemctl status {self.unit}`")
        if first.state != State.RUNNING:
            raise self._fail(f"{self.unit} died right after start ({first.detail()})",
                             hint=f"see `journalctl -u {self.unit}`")
        # Type=simple: "active" only means spawned. Still the same process a moment later?
        self.clock.sleep(self.settle)
        after = self.unit_state()
        if after.state != State.RUNNING or after.main_pid != first.main_pid \
                or after.restarts != first.restarts:
            raise self._fail(f"{self.unit} died within {self.settle:g}s of its start "
                             f"(main PID {first.main_pid}, now {after.detail()})",
                             hint=f"see `journalctl -u {self.unit}`")

    def _running_or_dead(self) -> UnitState | None:
        unit = self.unit_state()
        if unit.state == State.RUNNING and unit.main_pid:
            return unit
        if unit.state in (State.FAILED, State.STOPPED):
            return unit
        return None
