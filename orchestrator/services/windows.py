"""The service under the Windows Service Control Manager, through `sc.exe`.

`sc stop` returns while the service is still STOP_PENDING (3) and `sc start`
while it is START_PENDING (2): the manager polls `sc queryex NAME` until the
numeric STATE is reached, with a hard deadline. Error codes decide the rest:
1062 on stop = already stopped (fine), 1061 = cannot accept a control now
(keep polling, ask again), 1060 = no such service, 1056 on start = already
running (fine).
"""

from __future__ import annotations

from orchestrator.errors import CommandError, Completed, ServiceError
from orchestrator.host.clock import Clock
from orchestrator.host.runner import Runner
from orchestrator.services import proof
from orchestrator.services.base import (SETTLE, ServiceStatus, ServiceTarget, State, read_log_tail,
                                        wait_for)
from orchestrator.services.sc import ScError, ScQuery, ScState, parse_error, parse_query

SC = "sc.exe"
QUERY_TIMEOUT = 30.0
POLL = 0.5

_STATES = {ScState.STOPPED: State.STOPPED, ScState.START_PENDING: State.STARTING,
           ScState.STOP_PENDING: State.STOPPING, ScState.RUNNING: State.RUNNING,
           ScState.CONTINUE_PENDING: State.STARTING, ScState.PAUSE_PENDING: State.RUNNING,
           ScState.PAUSED: State.RUNNING}


class WindowsScManager:
    """Drive a Windows service with sc.exe; every command goes through the Runner."""

    kind = "windows"

    def __init__(self, target: ServiceTarget, runner: Runner, clock: Clock, *,
                 settle: float = SETTLE, proof_grace: float = 5.0, poll: float = POLL):
        self.target = target
        self.runner = runner
        self.clock = clock
        self.settle = settle
        self.proof_grace = proof_grace
        self.poll = poll
        self.notes: list[str] = []

    # -- observe -----------------------------------------------------------------
    def _sc(self, verb: str, timeout: float = QUERY_TIMEOUT) -> Completed:
        argv = [SC, verb, self.target.name]
        try:
            return self.runner.run(argv, timeout=timeout, check=False)
        except CommandError as exc:
            raise ServiceError(f"{SC} {verb} {self.target.name}: {exc.message}",
                               hint="is this Windows, and is sc.exe on PATH?",
                               completed=exc.completed) from exc

    def query(self) -> ScQuery:
        """`sc queryex NAME`, parsed; ServiceError when the service does not exist or sc fails."""
        done = self._sc("queryex")
        text = done.stdout + done.stderr
        parsed = parse_query(text)
        if parsed is not None:
            return parsed
        raise self._error("queryex", done)

    def status(self) -> ServiceStatus:
        try:
            q = self.query()
        except ServiceError as exc:
            return ServiceStatus(State.UNKNOWN, None, exc.message)
        state = _STATES.get(q.state, State.UNKNOWN) if q.state else State.UNKNOWN
        if state == State.STOPPED and (q.win32_exit_code or q.service_exit_code):
            state = State.FAILED
        return ServiceStatus(state, q.pid or None, q.describe())

    def warnings(self) -> list[str]:
        return proof.other_instances_warning(self.target)

    def stop_commands(self) -> list[list[str]]:
        return [[SC, "stop", self.target.name]]

    def start_commands(self) -> list[list[str]]:
        return [[SC, "start", self.target.name]]

    # -- change ------------------------------------------------------------------
    def _error(self, verb: str, done: Completed) -> ServiceError:
        code = parse_error(done.stdout + done.stderr, done.returncode)
        name = self.target.name
        if code == ScError.SERVICE_DOES_NOT_EXIST:
            return ServiceError(f"Windows has no service named {name} (error 1060)",
                                hint="check the plan's service name (`sc query type= service state= all`)",
                                completed=done)
        if code == ScError.ACCESS_DENIED:
            return ServiceError(f"{SC} {verb} {name}: access denied (error 5)",
                                hint="run from an elevated (Administrator) prompt", completed=done)
        return ServiceError(f"{SC} {verb} {name} failed with error {code}: {done.tail(3)}",
                            hint=f"see `{SC} queryex {name}` and Orthanc's log folder", completed=done)

    def _poll(self, timeout: float, want: ScState, *, on_stuck=None) -> ScQuery | None:
        """Poll queryex until `want` or a settled other state; None at the deadline."""
        def probe() -> ScQuery | None:
            q = self.query()
            if q.state == want:
                return q
            if on_stuck is not None:
                return on_stuck(q)
            return None
        return wait_for(self.clock, timeout, probe, interval=self.poll)

    def stop(self, *, timeout: float) -> None:
        started = self.clock.now()
        q = self.query()
        recorded = proof.recorded_processes(self.target)  # PID and start time, before the stop
        if q.state != ScState.STOPPED:
            self._send_stop()
            asked = [self.clock.now()]

            def stuck(q: ScQuery) -> None:
                # Back to RUNNING after a refused control (1061 while pending): ask again.
                if q.state == ScState.RUNNING and self.clock.now() - asked[0] >= 2 * self.poll:
                    self._send_stop()
                    asked[0] = self.clock.now()
                return None

            left = timeout - (self.clock.now() - started)
            if self._poll(left, ScState.STOPPED, on_stuck=stuck) is None:
                last = self.query()
                raise ServiceError(
                    f"{self.target.name} did not stop within {timeout:.0f}s: {last.describe()}",
                    hint=f"see `{SC} queryex {self.target.name}`; end the process with "
                    f"`taskkill /PID {last.pid or '<pid>'} /F` if it hangs")
        proof.prove_stopped(self.target, self.clock, manager="the Windows service manager",
                            grace=self.proof_grace, recorded=recorded)

    def _send_stop(self) -> None:
        done = self._sc("stop")
        code = parse_error(done.stdout + done.stderr, done.returncode)
        if code is None:
            return
        if code == ScError.SERVICE_NOT_ACTIVE:
            self.notes.append(f"{self.target.name} was not started (error 1062)")
            return
        if code == ScError.SERVICE_CANNOT_ACCEPT_CTRL:
            # Pending state: the service cannot take a control now; polling decides.
            self.notes.append(f"{self.target.name} could not accept the stop yet (error 1061): polling")
            return
        raise self._error("stop", done)

    def start(self, *, timeout: float) -> None:
        started = self.clock.now()
        done = self._sc("start", timeout=timeout)
        code = parse_error(done.stdout + done.stderr, done.returncode)
        if code == ScError.SERVICE_ALREADY_RUNNING:
            self.notes.append(f"{self.target.name} was already running (error 1056)")
        elif code == ScError.SERVICE_CANNOT_ACCEPT_CTRL:
            self.notes.append(f"{self.target.name} is in a pending state (error 1061): polling")
        elif code is not None:
            raise self._error("start", done)

        def dead(q: ScQuery) -> ScQuery | None:
            return q if q.state == ScState.STOPPED else None

        left = timeout - (self.clock.now() - started)
        first = self._poll(left, ScState.RUNNING, on_stuck=dead)
        if first is None:
            last = self.query()
            raise ServiceError(f"{self.target.name} did not reach RUNNING within {timeout:.0f}s: "
                               f"{last.describe()}{self._log_tail()}",
                               hint=f"see `{SC} queryex {self.target.name}` and Orthanc's Logs folder")
        if first.state == ScState.STOPPED:
            raise ServiceError(f"{self.target.name} stopped right after start: "
                               f"{first.describe()}{self._log_tail()}",
                               hint="see Orthanc's Logs folder (a bad configuration or an index "
                               "that needs --upgrade are the usual causes)")
        self.clock.sleep(self.settle)
        after = self.query()
        if after.state != ScState.RUNNING or (first.pid and after.pid != first.pid):
            raise ServiceError(f"{self.target.name} died within {self.settle:g}s of its start: "
                               f"{after.describe()}{self._log_tail()}",
                               hint="see Orthanc's Logs folder")

    def _log_tail(self) -> str:
        tail = read_log_tail(self.target.log_file)
        return f"; log: {tail}" if tail else ""
