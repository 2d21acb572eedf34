"""The service under a SysV init script: `/etc/init.d/NAME stop|start|status`.

LSB exit codes are not trusted alone: the stock Orthanc script's `status`
answers for any Orthanc on the host, and start-stop-daemon `--background`
returns 0 even when the daemon dies at once. The state comes from the pidfile
and the process table. `policy-rc.d` is asked first, as invoke-rc.d would.
"""

from __future__ import annotations

import re
from pathlib import Path

from orchestrator.errors import CommandError, ServiceError
from orchestrator.host.clock import Clock
from orchestrator.host.runner import Runner
from orchestrator.services import proof
from orchestrator.services.base import (SETTLE, ServiceStatus, ServiceTarget, State, read_log_tail,
                                        wait_for)

POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
INIT_D = Path("/etc/init.d")
QUERY_TIMEOUT = 30.0

# policy-rc.d exit codes (Debian's invoke-rc.d interface)
POLICY_ALLOWED = {0, 104, 105}  # allowed / allowed / behaviour undefined (invoke-rc.d goes ahead)
POLICY_FORBIDDEN = 101
LSB_STATUS = {0: "running", 1: "dead, pidfile exists", 2: "dead, lock file exists",
              3: "not running", 4: "unknown"}


def unscoped_stop_lines(script_text: str) -> list[int]:
    """Line numbers of `start-stop-daemon --stop` calls with no `--pidfile`.

    Such a call matches every process of the executable: Debian's stock
    /etc/init.d/orthanc ends its stop with one, so it stops every Orthanc on the host.
    """
    found = []
    for number, line in enumerate(script_text.splitlines(), 1):
        code = line.split("#", 1)[0]
        if re.search(r"start-stop-daemon\b", code) and re.search(r"(^|\s)(--stop|-K)\b", code) \
                and not re.search(r"--pidfile|(^|\s)-p\s", code):
            found.append(number)
    return found


def read_pidfile(path: Path | None) -> int | None:
    """The PID in a pidfile, or None when it is missing or not a number."""
    if path is None:
        return None
    try:
        text = Path(path).read_text().strip().split()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text[0]) if text and text[0].isdigit() else None


class SysvManager:
    """Drive the service through its init script, confirmed by pidfile and process table."""

    kind = "sysv"

    def __init__(self, target: ServiceTarget, runner: Runner, clock: Clock, *,
                 script: Path | None = None, policy_rc_d: Path | None = POLICY_RC_D,
                 settle: float = SETTLE, proof_grace: float = 5.0,
                 allow_unscoped_stop: bool = False):
        self.target = target
        self.runner = runner
        self.clock = clock
        self.script = Path(script) if script else INIT_D / target.name
        # None: do not ask (no policy layer). A path that does not exist: allowed, like invoke-rc.d.
        self.policy_rc_d = Path(policy_rc_d) if policy_rc_d else None
        self.settle = settle
        self.proof_grace = proof_grace
        # A script whose stop matches by executable would also kill other Orthancs: refused
        # while any runs, unless the operator accepts it.
        self.allow_unscoped_stop = allow_unscoped_stop
        self.notes: list[str] = []

    # -- observe -----------------------------------------------------------------
    def _live(self) -> tuple[int | None, list[proof.OrthancProcess]]:
        """(pid from the pidfile if it is really ours, every live process of the target)."""
        procs = proof.service_processes(self.target)
        pid = read_pidfile(self.target.pidfile)
        if pid is not None and not any(p.pid == pid for p in procs):
            pid = None
        return pid, procs

    def lsb_status(self) -> int | None:
        try:
            return self.runner.run([str(self.script), "status"], timeout=QUERY_TIMEOUT,
                                   check=False).returncode
        except CommandError:
            return None

    def status(self) -> ServiceStatus:
        lsb = self.lsb_status()
        pid, procs = self._live()
        said = f"{self.script} status: {lsb} ({LSB_STATUS.get(lsb, 'other')})" if lsb is not None \
            else f"{self.script} status could not run"
        if procs:
            main = pid or procs[0].pid
            detail = said
            if pid is None and self.target.pidfile is not None:
                detail += f"; pidfile {self.target.pidfile} does not name it"
            if lsb not in (0, None):
                detail += "; the script's status disagrees with the process table"
            return ServiceStatus(State.RUNNING, main, detail)
        stale = read_pidfile(self.target.pidfile)
        detail = said + "; no process of the binary with this config"
        if lsb == 0:
            detail += " (yet the script says running: a stale pidfile, a zombie or another Orthanc)"
        if stale is not None:
            detail += f"; stale pidfile {self.target.pidfile} names PID {stale}"
            return ServiceStatus(State.FAILED if lsb == 1 else State.STOPPED, None, detail)
        return ServiceStatus(State.STOPPED, None, detail)

    def warnings(self) -> list[str]:
        out = []
        try:
            lines = unscoped_stop_lines(self.script.read_text(errors="replace"))
        except OSError:
            lines = []
        if lines:
            others = proof.exec_collateral(self.target)
            where = ", ".join(str(n) for n in lines)
            text = (f"{self.script} stops processes by executable, not by pidfile (line {where}): "
                    "its stop kills every Orthanc on this host")
            if others:
                text += f", including {len(others)} other instance(s): " + \
                    ", ".join(p.describe() for p in others)
            out.append(text)
        elif others := proof.other_instances(self.target):
            out.append(f"{len(others)} other Orthanc process(es) on this host: "
                       + ", ".join(p.describe() for p in others))
        return out

    def stop_commands(self) -> list[list[str]]:
        return [[str(self.script), "stop"]]

    def start_commands(self) -> list[list[str]]:
        return [[str(self.script), "start"]]

    # -- change ------------------------------------------------------------------
    def check_policy(self, action: str) -> None:
        """Ask policy-rc.d, as invoke-rc.d does; raise ServiceError when it refuses."""
        if self.policy_rc_d is None or not self.policy_rc_d.exists():
            return
        argv = [str(self.policy_rc_d), self.target.name, action]
        try:
            done = self.runner.run(argv, timeout=QUERY_TIMEOUT, check=False)
        except CommandError as exc:
            raise ServiceError(f"cannot ask {self.policy_rc_d} about '{action}': {exc.message}",
                               hint="fix or remove the policy script", completed=exc.completed) from exc
        if done.returncode in POLICY_ALLOWED:
            return
        if done.returncode == POLICY_FORBIDDEN:
            raise ServiceError(
                f"{self.policy_rc_d} forbids '{action}' of {self.target.name} (exit 101)",
                hint="this host's policy blocks service actions (common in containers and chroots); "
                "remove or change the policy, or run the action yourself", completed=done)
        raise ServiceError(
            f"{self.policy_rc_d} did not allow '{action}' of {self.target.name} "
            f"(exit {done.returncode})", hint="see the policy-rc.d interface in invoke-rc.d(8)",
            completed=done)

    def _refuse_collateral(self) -> None:
        if self.allow_unscoped_stop:
            return
        try:
            lines = unscoped_stop_lines(self.script.read_text(errors="replace"))
        except OSError:
            return
        others = proof.exec_collateral(self.target) if lines else []
        if others:
            raise ServiceError(
                f"{self.script} stop would also kill {len(others)} other Orthanc process(es) "
                f"(line {', '.join(map(str, lines))} stops by executable, not by pidfile): "
                + ", ".join(p.describe() for p in others),
                hint="give the script --pidfile on every start-stop-daemon --stop, or stop the "
                "other instances first")

    def _log_tail(self) -> str:
        tail = read_log_tail(self.target.log_file)
        return f"; log: {tail}" if tail else ""

    def stop(self, *, timeout: float) -> None:
        started = self.clock.now()
        _, procs = self._live()
        recorded = tuple(p.recorded for p in procs)  # PID and start time, before the stop
        if procs:
            self.check_policy("stop")
            self._refuse_collateral()
            try:
                self.runner.run(self.stop_commands()[0], timeout=timeout)
            except CommandError as exc:
                raise ServiceError(f"{self.script} stop failed: {exc.message}",
                                   hint=f"see {self.target.log_file or 'the Orthanc log'}",
                                   completed=exc.completed) from exc
            left = timeout - (self.clock.now() - started)
            # Each wait wakes when its process exits (not a scan: an exiting Orthanc drops
            # its command line before it has exited).
            alive = proof.wait_all_gone(recorded, max(left, 0.0))
            if alive:
                raise ServiceError(
                    f"{self.script} stop returned, but {self.target.name} is still running "
                    f"{timeout:.0f}s later: " + ", ".join(r.describe() for r in alive),
                    hint=f"kill {alive[0].pid} yourself, then retry")
        proof.prove_stopped(self.target, self.clock, manager=f"{self.script}", grace=self.proof_grace,
                            recorded=recorded)

    def start(self, *, timeout: float) -> None:
        started = self.clock.now()
        _, procs = self._live()
        if procs:
            return
        self.check_policy("start")
        try:
            self.runner.run(self.start_commands()[0], timeout=timeout)
        except CommandError as exc:
            raise ServiceError(f"{self.script} start failed: {exc.message}{self._log_tail()}",
                               hint=f"see {self.target.log_file or 'the Orthanc log'}",
                               completed=exc.completed) from exc
        left = timeout - (self.clock.now() - started)
        first = wait_for(self.clock, left, lambda: self._live()[1] or None)
        if first is None:
            raise ServiceError(f"{self.script} start returned, but no {self.target.binary} with "
                               f"{self.target.config} runs{self._log_tail()}",
                               hint=f"see {self.target.log_file or 'the Orthanc log'}")
        # start-stop-daemon --background returns before the daemon could fail: settle, then look again.
        self.clock.sleep(self.settle)
        pids = {p.pid for p in first}
        now = {p.pid for p in self._live()[1]}
        if not (pids & now):
            raise ServiceError(f"{self.target.name} died within {self.settle:g}s of its start"
                               f"{self._log_tail()}",
                               hint=f"see {self.target.log_file or 'the Orthanc log'}")
