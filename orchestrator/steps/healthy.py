"""Waiting for the service's new process to answer healthy, through the host's ports.

`wait_healthy` polls `/system` until it answers 200 *from the new process*:
the manager's main PID must be alive, must have started after the stop was
proven, and must (it or a child) listen on the URL's port, so a stale answer
from the old process cannot pass. A 401 means "up, wrong credentials" and
fails at once with a hint. Used by health-check and by the undo of a stop.

What a healthy service must still hold is judged under live traffic: the counts
may grow, never shrink, and every instance ID listed before the stop must still
be listed (`kept`). The store probe (`probe_store`) proves ingest: it stores a
tiny synthetic instance under a reserved patient ID, reads it back and deletes it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from orchestrator.errors import OrthancHttpError, StepError
from orchestrator.host.host import Host, OrthancPort, ServiceStatusView
from orchestrator.steps.record import Json, Record

POLL = 0.05
DEAD_GRACE = 5.0  # a service seen down this long after its start has failed (none restarts it)
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
PAGE = 1000  # instance IDs per /instances request
PROBE_PATIENT = "ORCHESTRATOR-STORE-PROBE"  # reserved: the probe's instances, and only them
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


def instance_ids(host: Host) -> set[str]:
    """Every instance ID the service lists (GET /instances, a page at a time)."""
    client: Any = host.orthanc()
    found: set[str] = set()
    try:
        while True:
            page = client.get_json(f"/instances?since={len(found)}&limit={PAGE}")
            if not isinstance(page, list):
                raise StepError(f"GET {client.base_url}/instances: not a list of IDs",
                                hint="is service.url an Orthanc server?")
            found.update(str(i) for i in page)
            if len(page) < PAGE:
                return found
    finally:
        client.close()


def kept(before_counts: Mapping[str, int] | None, after_counts: Mapping[str, int] | None,
         before_ids: set[str] | None, after_ids: set[str] | None) -> str:
    """Raise StepError when data is gone: a count shrank, or an instance listed before is
    missing; else one line saying what grew (live traffic is fine)."""
    if before_counts and after_counts:
        shrunk = [k for k in REST_COUNT_KEYS if after_counts.get(k, 0) < before_counts.get(k, 0)]
        if shrunk:
            raise StepError(f"{', '.join(shrunk)} shrank: before {_counts(before_counts)}; "
                            f"now {_counts(after_counts)}",
                            hint="the service does not hold all the data it held before")
    if before_ids is not None and after_ids is not None:
        missing = sorted(before_ids - after_ids)
        if missing:
            raise StepError(f"{len(missing)} of the {len(before_ids)} instances listed before "
                            f"the stop are missing (first: {', '.join(missing[:3])})",
                            hint="the service does not hold all the data it held before")
    grew = after_counts.get("instances", 0) - before_counts.get("instances", 0) \
        if before_counts and after_counts else 0
    return f"{grew} instances more than before (stored meanwhile)" if grew > 0 else ""


def probe_store(host: Host) -> str:
    """Store a tiny synthetic instance under PROBE_PATIENT, read it back, delete it; raise
    StepError when any of it fails (a service that answers but cannot ingest)."""
    client: Any = host.orthanc()
    try:
        drop_probes(client)
        tags = {"PatientID": PROBE_PATIENT, "PatientName": "ORCHESTRATOR^PROBE",
                "StudyDescription": "orchestrator store probe (deleted at once)",
                "Modality": "OT"}
        try:
            made = client.request("POST", "/tools/create-dicom",
                                  data=json.dumps({"Tags": tags})).json()
            iid = str(made["ID"])
            data = client.request("GET", f"/instances/{iid}/file").content
            if data[128:132] != b"DICM":
                raise StepError(f"the probe instance {iid} reads back as no DICOM file",
                                hint="the storage area does not return what was stored")
            client.request("DELETE", f"/instances/{iid}")
        except OrthancHttpError as exc:
            raise StepError(f"the store probe failed: {exc.message}",
                            hint="the service answers but cannot store: check its log "
                                 "(an index altered by a newer Orthanc fails every store)") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise StepError(f"the store probe got an unexpected answer: {exc}",
                            hint="is service.url an Orthanc server?") from exc
        return f"store probe: stored, read back and deleted instance {iid}"
    finally:
        client.close()


def drop_probes(client: Any) -> int:
    """Delete any instance left under PROBE_PATIENT (a probe cut short); return how many."""
    query = {"Level": "Instance", "Query": {"PatientID": PROBE_PATIENT}}
    ids = client.request("POST", "/tools/find", data=json.dumps(query)).json()
    for iid in ids if isinstance(ids, list) else []:
        client.request("DELETE", f"/instances/{iid}", expect=(200, 404))
    return len(ids) if isinstance(ids, list) else 0


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{counts.get(k, '?')} {k}" for k in REST_COUNT_KEYS)


def counts_of(stats: dict[str, Json]) -> dict[str, int]:
    return {k: int(stats[v]) for k, v in REST_COUNT_KEYS.items()}  # type: ignore[arg-type]


def _str(value: Json) -> str | None:
    return None if value is None else str(value)


def _int(value: Json) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
