"""Waiting for the service's new process to answer healthy, through the host's ports.

`wait_healthy` polls `/system` until it answers 200 *from the new process*:
the manager's main PID must be alive, must have started after the stop was
proven, and must (it or a child) listen on the URL's port, so a stale answer
from the old process cannot pass. A 401 means "up, wrong credentials" and
fails at once with a hint. Used by health-check and by the undo of a stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from orchestrator.errors import OrthancHttpError, StepError
from orchestrator.host.host import Host, OrthancPort, ServiceStatusView
from orchestrator.steps.record import Json, Record

POLL = 0.05
DEAD_GRACE = 5.0  # a service seen down this long after its start has failed (none restarts it)
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
REST_COUNT_KEYS = {"patients": "CountPatients", "studies": "CountStudies",
                   "series": "CountSeries", "instances": "CountInstances"}


@dataclass(frozen=True, kw_only=True)
class Answer(Record):
    """What the new process answered on /system."""

    pid: int | None
    version: str | None
    database_version: int | None
    waited: float


def wait_healthy(host: Host, *, timeout: float, expect_db: int | None = None,
                 expect_version: str | None = None, not_before: float | None = None,
                 old_pid: int | None = None) -> Answer:
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
                return Answer(pid=status.main_pid, version=_str(system.get("Version")),
                              database_version=_int(system.get("DatabaseVersion")),
                              waited=round(now - start, 3))
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


def _look(host: Host, client: OrthancPort, status: ServiceStatusView, *, old_pid: int | None,
          not_before: float | None, port: int | None) -> tuple[dict[str, Json] | None, str]:
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


def _check_system(system: dict[str, Json], expect_db: int | None, expect_version: str | None) -> None:
    db = system.get("DatabaseVersion")
    if expect_db is not None and db != expect_db:
        raise StepError(f"/system says DatabaseVersion {db}, expected {expect_db}",
                        hint="the index was not upgraded as planned")
    version = system.get("Version")
    if expect_version is not None and version != expect_version:
        raise StepError(f"/system says Version {version}, expected {expect_version}",
                        hint="the installed binary is not the one the plan expects")


def rest_counts(host: Host) -> dict[str, int]:
    """The service's resource counts from /statistics."""
    client = host.orthanc()
    try:
        return counts_of(client.statistics())
    finally:
        client.close()


def counts_of(stats: dict[str, Json]) -> dict[str, int]:
    return {k: int(stats[v]) for k, v in REST_COUNT_KEYS.items()}  # type: ignore[arg-type]


def _str(value: Json) -> str | None:
    return None if value is None else str(value)


def _int(value: Json) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
