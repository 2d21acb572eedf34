"""Carry back what a rolled-back version acknowledged: instances its folder holds, the old lacks.

A rollback that leaves the new version's database folder behind (a relocation
moved aside as `db-vN.rolled-back-RUN`) leaves there every instance the new
version answered 200 for. Once that version has fully stopped, its index is
read read-only (orthanc/storage.py: a stopped index, a WAL replayed in a private
copy), and each full-DICOM attachment whose instance the restarted old service
does not list is read (decompressed, checked against the row's MD5), stored
into the old service over REST and checked there by MD5.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import OrchestratorError, OrthancHttpError, StepError
from orchestrator.host.host import Host
from orchestrator.orthanc import storage
from orchestrator.orthanc.storage import FileType, StorageFormatError
from orchestrator.steps.base import RunContext
from orchestrator.steps.healthy import PROBE_PATIENT, instance_ids
from orchestrator.steps.kind import StepKind

MAX_LISTED = 5


@dataclass
class CarriedBack:
    """What a carry-back did: from which folder, how many instances, and what failed."""

    folder: Path
    carried: int = 0
    failures: list[str] = field(default_factory=list)

    def text(self) -> str:
        return (f"{self.carried} instances received since the upgrade were carried back "
                f"from {self.folder} (verified by MD5)")


def left_behind(ctx: RunContext) -> list[Path]:
    """The new versions' folders this run's rollback moved aside (relocations' `to`)."""
    found: list[Path] = []
    for rec in ctx.records.values():
        if rec.kind != StepKind.RELOCATE or not rec.intent or "to" not in rec.intent:
            continue
        to = Path(str(rec.intent["to"]))
        if to.parent.is_dir():
            found += sorted(p for p in to.parent.glob(f"{to.name}.rolled-back-{ctx.run_id}*")
                            if (p / storage.INDEX_FILE).is_file())
    return found


def carry_back(host: Host, folder: Path) -> CarriedBack:
    """Store into the service every instance of `folder`'s index it lacks; raise StepError
    naming the failures (and the command that finishes the job) when any is not carried."""
    done = CarriedBack(folder)
    have = instance_ids(host)
    client: Any = host.orthanc()
    try:
        with storage.open_index(folder / storage.INDEX_FILE) as con:
            probes = _probe_instances(con)
            for att in storage.attachments(con):
                if att.file_type != FileType.DICOM or not att.instance_id or \
                        att.instance_id in have or att.instance_id in probes:
                    continue
                problem = _carry_one(client, folder, att)
                if problem:
                    done.failures.append(problem)
                else:
                    done.carried += 1
                    have.add(att.instance_id)
    except OrchestratorError as exc:
        done.failures.append(exc.message)
    finally:
        client.close()
    if done.failures:
        listed = "; ".join(done.failures[:MAX_LISTED])
        raise StepError(f"{len(done.failures)} instances of {folder} could not be carried back "
                        f"({done.carried} were): {listed}",
                        hint=f"finish by hand: orchestrator import-storage {folder} "
                             f"{client.base_url} --verify")
    return done


def _carry_one(client: Any, folder: Path, att: storage.Attachment) -> str:
    """Store one attachment's DICOM and check it by MD5; '' or what went wrong."""
    try:
        data = storage.read_attachment(folder, att)
    except (StorageFormatError, OSError) as exc:
        return f"{att.instance_id}: {exc}"
    md5 = hashlib.md5(data).hexdigest()
    if att.md5 and md5 != att.md5.lower():
        return f"{att.instance_id}: its file does not match the MD5 in the index"
    try:
        client.request("POST", "/instances", data=data,
                       headers={"Content-Type": "application/dicom"})
        remote = client.request("GET", f"/instances/{att.instance_id}/attachments/dicom/md5").text
    except OrthancHttpError as exc:
        return f"{att.instance_id}: {exc.message}"
    if remote.strip().strip('"') != md5:
        return f"{att.instance_id}: MD5 {remote.strip()} on the service, {md5} in {folder}"
    return ""


def _probe_instances(con: Any) -> set[str]:
    """Instances of the reserved probe patient (a store probe cut short): never carried."""
    rows = con.execute(
        "SELECT i.publicId FROM Resources i JOIN Resources se ON i.parentId = se.internalId "
        "JOIN Resources st ON se.parentId = st.internalId "
        "JOIN MainDicomTags t ON t.id = st.parentId "
        "WHERE i.resourceType = 3 AND t.tagGroup = 16 AND t.tagElement = 32 AND t.value = ?",
        (PROBE_PATIENT,)).fetchall()
    return {str(r[0]) for r in rows}
