"""What both commands do with an Orthanc: connect, ask for presence, store, read MD5s."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import OrthancHttpError, RefusedError
from orchestrator.replication.listing import detail, get_json, status_hint
from orchestrator.host.clock import Clock
from orchestrator.replication.options import PresenceMode
from orchestrator.replication.outcome import CopyOutcome
from orchestrator.replication.pool import REAL_CLOCK, RetryPolicy, Unreachable, with_retries
from orchestrator.replication.transport import Answer, Body, Endpoint

PRESENCE_PATIENCE = 64  # misses in a row before "auto" stops asking the target first


def connect(endpoint: Endpoint, role: str, policy: RetryPolicy) -> dict:
    """GET /system; raise RefusedError naming the side when it is not a usable Orthanc."""
    # A side that is down at the start is reported quickly; mid-run, retries ride longer.
    quick = RetryPolicy(min(3, policy.attempts), policy.base_delay, policy.max_delay)
    try:
        system = get_json(endpoint, "/system", quick)
    except Unreachable as exc:
        raise RefusedError(f"{role} {exc.error.message}", hint=exc.error.hint) from None
    except OrthancHttpError as exc:
        raise RefusedError(f"{role} {exc.message}", hint=exc.hint) from None
    if not isinstance(system, dict) or "Version" not in system:
        raise RefusedError(f"{role} {endpoint.base_url}/system: not an Orthanc answer",
                           hint="is this URL an Orthanc server?")
    return system


def count_instances(endpoint: Endpoint, policy: RetryPolicy) -> int | None:
    try:
        stats = get_json(endpoint, "/statistics", policy)
    except (OrthancHttpError, Unreachable):
        return None
    value = stats.get("CountInstances") if isinstance(stats, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Presence:
    """Whether to ask the target for an instance before sending it.

    "always" and "never" are fixed. "auto" asks while asking pays: after
    PRESENCE_PATIENCE misses in a row (an empty target) it stops asking and
    relies on POST answering AlreadyStored; the first AlreadyStored turns
    asking back on (a target that already holds part of the data).
    """

    def __init__(self, mode: PresenceMode = PresenceMode.AUTO):
        self.mode = mode
        self._asking = mode is not PresenceMode.NEVER
        self._misses = 0
        self._lock = threading.Lock()

    def should_ask(self) -> bool:
        return self._asking

    def record(self, present: bool) -> None:
        if self.mode is not PresenceMode.AUTO:
            return
        with self._lock:
            if present:
                self._misses = 0
                self._asking = True
            else:
                self._misses += 1
                if self._misses >= PRESENCE_PATIENCE:
                    self._asking = False


@dataclass(frozen=True)
class Stored:
    outcome: CopyOutcome  # COPIED, PRESENT or FAILED
    reason: str = ""
    instance_id: str = ""
    status: int | None = None  # the HTTP status of a refusal


@dataclass(frozen=True)
class Lookup:
    """The target's answer to "do you have this instance?"."""

    present: bool | None  # None: neither 200 nor 404 (see status and reason)
    status: int
    reason: str = ""


def has_instance(endpoint: Endpoint, iid: str, policy: RetryPolicy,
                 clock: Clock = REAL_CLOCK) -> Lookup:
    """GET /instances/{iid}: present on 200, absent on 404, else a problem with its status."""
    answer = with_retries(lambda: endpoint.get(f"/instances/{iid}"), policy, clock)
    if answer.status in (200, 404):
        return Lookup(answer.status == 200, answer.status)
    return Lookup(None, answer.status, f"target GET /instances/{iid}: HTTP {answer.status}"
                  f"{detail(answer.data)}{hint_suffix(answer.status)}")


def store(endpoint: Endpoint, body: bytes | Body, expected_id: str | None,
          policy: RetryPolicy, clock: Clock = REAL_CLOCK) -> Stored:
    """POST one DICOM file and interpret the answer (a retried POST is harmless).

    A streamed `body` is sent again on a retry (a file or an inflater can be);
    its own failure (BodyError) propagates.
    """
    answer = with_retries(lambda: endpoint.post("/instances", body), policy, clock)
    return stored(answer, expected_id)


def stored(answer: Answer, expected_id: str | None) -> Stored:
    """Interpret the target's answer to POST /instances."""
    if answer.status != 200:
        return Stored(CopyOutcome.FAILED, f"target refused the file: HTTP {answer.status}"
                      f"{detail(answer.data)}{hint_suffix(answer.status)}",
                      status=answer.status)
    try:
        doc = json.loads(answer.data)
        status, iid = str(doc.get("Status")), str(doc.get("ID"))
    except (ValueError, AttributeError):
        return Stored(CopyOutcome.FAILED, "target answered the POST with something that is not "
                      "an Orthanc store answer")
    if expected_id and iid != expected_id:
        return Stored(CopyOutcome.FAILED, f"the file holds instance {iid}, not {expected_id} "
                      "(the source sent another instance)", instance_id=iid)
    if status == "Success":
        return Stored(CopyOutcome.COPIED, instance_id=iid)
    if status == "AlreadyStored":
        return Stored(CopyOutcome.PRESENT, instance_id=iid)
    return Stored(CopyOutcome.FAILED, f"target did not store it: Status {status}", instance_id=iid)


def md5_of(endpoint: Endpoint, iid: str, policy: RetryPolicy,
           clock: Clock = REAL_CLOCK) -> tuple[str | None, str]:
    """Return (md5, how): how is "stored", "hashed" (MD5s not stored: file hashed) or "missing"."""
    answer = with_retries(lambda: endpoint.get(f"/instances/{iid}/attachments/dicom/md5"),
                          policy, clock)
    if answer.status == 200:
        text = answer.data.decode("ascii", "replace").strip()
        if len(text) == 32:
            return text.lower(), "stored"
    elif answer.status != 404:
        raise OrthancHttpError(f"GET {endpoint.base_url}/instances/{iid}/attachments/dicom/md5: "
                               f"HTTP {answer.status}{detail(answer.data)}",
                               status=answer.status)
    # 404: no such instance, or StoreMD5ForAttachments is off: hash the file itself.
    answer = with_retries(lambda: endpoint.get(f"/instances/{iid}/file"), policy, clock)
    if answer.status == 404:
        return None, "missing"
    if answer.status != 200:
        raise OrthancHttpError(f"GET {endpoint.base_url}/instances/{iid}/file: "
                               f"HTTP {answer.status}{detail(answer.data)}", status=answer.status)
    return hashlib.md5(answer.data).hexdigest(), "hashed"


def hint_suffix(status: int) -> str:
    hint = status_hint(status)
    return f"; {hint}" if hint else ""


def limit_warnings(config_path: Path | None) -> list[str]:
    """Warnings about a target that recycles (deletes) patients to make room."""
    if config_path is None:
        return ["the target's MaximumStorageSize/MaximumPatientCount are not visible over "
                "REST (Orthanc 1.10): give its configuration with --target-config to check that "
                "it will not delete old patients to make room"]
    from orchestrator.orthanc.config import load_config

    config = load_config(config_path)
    out = []
    if config.max_storage_size:
        out.append(f"the target has MaximumStorageSize {config.max_storage_size} MB "
                   f"({config.file_defining('MaximumStorageSize')}): it deletes its oldest "
                   "patients to make room, so a large copy can silently lose data")
    if config.max_patient_count:
        out.append(f"the target has MaximumPatientCount {config.max_patient_count} "
                   f"({config.file_defining('MaximumPatientCount')}): it deletes its oldest "
                   "patients beyond that count")
    return out
