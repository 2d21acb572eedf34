"""health-check: prove the restarted service is the new one, healthy, with all its data.

It polls `/system` until it answers 200 *from the new process*: the manager's
main PID must be alive, must have started after the stop was proven, and must
(it or a child) listen on the URL's port, so a stale answer from the old
process cannot pass. Then DatabaseVersion (and Version when the plan names
one) must match, and `/statistics` counts must equal preflight's. A 401 means
"up, wrong credentials" and fails at once with a hint.

It only verifies, so a dry run describes it and does not run it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from orchestrator.errors import OrthancHttpError, StepError
from orchestrator.steps.base import RunContext, StepBase, counts_text, latest, preflight_facts

POLL = 0.05
DEAD_GRACE = 5.0  # a service seen down this long after its start has failed (none restarts it)
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
REST_COUNT_KEYS = {"patients": "CountPatients", "studies": "CountStudies",
                   "series": "CountSeries", "instances": "CountInstances"}


def wait_healthy(host: Any, *, timeout: float, expect_db: int | None = None,
                 expect_version: str | None = None, not_before: float | None = None,
                 old_pid: int | None = None) -> dict:
    """Poll until the service's new process answers /system as expected; return what it said."""
    client = host.orthanc()
    parts = urlsplit(client.base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    check_port = parts.hostname in LOCAL_HOSTS
    start = host.clock.now()
    down_since: float | None = None
    try:
        while True:
            status = host.service.status()
            now = host.clock.now()
            down_since = (down_since or now) if not status.running else None
            system, last = _look(host, client, status, old_pid=old_pid, not_before=not_before,
                                 port=port if check_port else None)
            if system is not None:
                _check_system(system, expect_db, expect_version)
                return {"pid": status.main_pid, "version": system.get("Version"),
                        "database_version": system.get("DatabaseVersion"),
                        "waited": round(now - start, 3)}
            if down_since is not None and now - down_since >= DEAD_GRACE:
                raise StepError(f"the service is not running: {last}", hint="see the service's log")
            if now - start >= timeout:
                raise StepError(f"no healthy answer from {client.base_url}/system within "
                                f"{timeout:g}s: {last}",
                                hint="see the service's log; raise the step's timeout if it "
                                     "is only slow")
            host.clock.sleep(POLL)
    finally:
        client.close()


def _look(host: Any, client: Any, status: Any, *, old_pid: int | None, not_before: float | None,
          port: int | None) -> tuple[dict | None, str]:
    """One look: (/system's answer from the new process, or None and why not yet)."""
    pid = status.main_pid
    if not status.running:
        return None, f"the service is {status.state.value}" + (f" ({status.detail})" if status.detail else "")
    if pid is not None and old_pid is not None and pid == old_pid:
        return None, f"PID {pid} is still the old process"
    if pid is not None and not_before is not None and \
            (host.processes.started_at(pid) or not_before) < not_before - 1.0:
        return None, f"PID {pid} started before the stop: not the new process"
    if pid is not None and port is not None and host.processes.listens(pid, port) is False:
        return None, f"PID {pid} does not listen on port {port} yet"
    try:
        return client.system(), "answered"
    except OrthancHttpError as exc:
        if exc.status == 401:
            raise StepError(f"{exc.message}: the service is up but refuses the credentials",
                            hint="fix service.credentials (password_env, password_file or "
                                 "~/.netrc)") from exc
        return None, exc.message


def _check_system(system: dict, expect_db: int | None, expect_version: str | None) -> None:
    db = system.get("DatabaseVersion")
    if expect_db is not None and db != expect_db:
        raise StepError(f"/system says DatabaseVersion {db}, expected {expect_db}",
                        hint="the index was not upgraded as planned")
    version = system.get("Version")
    if expect_version is not None and version != expect_version:
        raise StepError(f"/system says Version {version}, expected {expect_version}",
                        hint="the installed binary is not the one the plan expects")


def rest_counts(host: Any) -> dict:
    client = host.orthanc()
    try:
        stats = client.statistics()
    finally:
        client.close()
    return {k: int(stats[v]) for k, v in REST_COUNT_KEYS.items()}


class HealthCheck(StepBase):
    kind = "health-check"

    def describe(self) -> str:
        expect = self.options.get("expect") or {}
        parts = ["poll /system until the new process answers"]
        if expect.get("database_version") is not None:
            parts.append(f"DatabaseVersion {expect['database_version']}")
        if expect.get("version"):
            parts.append(f"Version {expect['version']}")
        if expect.get("counts", True):
            parts.append("counts as before")
        return ", ".join(parts)

    def apply(self, host: Any, ctx: RunContext, intent: dict) -> dict:
        return {}

    def verify(self, host: Any, ctx: RunContext, intent: dict, facts: dict) -> dict:
        from orchestrator.orthanc.binary import binary_version, expected_schema

        expect = self.options.get("expect") or {}
        expect_db = expect.get("database_version")
        if expect_db is None:
            # The binary may have been replaced since preflight (a package step): read it again.
            expect_db = expected_schema(binary_version(ctx.plan.service.binary, host.runner))
        stop = latest(ctx, "stop-service")
        answer = wait_healthy(
            host, timeout=float(self.options.get("timeout", 300)), expect_db=expect_db,
            expect_version=expect.get("version"),
            not_before=(stop.facts.get("stopped_at") if stop else None),
            old_pid=(stop.intent.get("main_pid") if stop else None))
        out = {"health": answer}
        before = preflight_facts(ctx).get("counts")
        if expect.get("counts", True) and before:
            after = rest_counts(host)
            out["counts"] = after
            if after != before:
                raise StepError(f"counts differ: before {counts_text(before)}; now {counts_text(after)}",
                                hint="the upgraded index does not hold the same data: rolled back")
        out["summary"] = (f"PID {answer['pid']} answers: Orthanc {answer['version']}, "
                          f"DatabaseVersion {answer['database_version']}"
                          + (f", {counts_text(out['counts'])}" if "counts" in out else ""))
        return out
