"""The instances of a server and their MD5s, listed over REST or read from a stopped
server's index, and compared between a source and a target.

A blue/green move checks MD5s in two rounds: everything copied so far while the
old server still serves (`Checked`, kept in a file beside the resume state), and
during the write freeze only what is new since. An instance ID is a hash of its
DICOM UIDs and Orthanc never overwrites a stored instance by default, so an MD5
found equal once stays equal until the instance is deleted; a deleted instance
leaves the set, which the freeze's set comparison sees.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import OrthancHttpError
from orchestrator.orthanc.storage import FileType, open_index
from orchestrator.replication import listing
from orchestrator.replication.pool import RetryPolicy
from orchestrator.replication.target import md5_of
from orchestrator.replication.transport import Endpoint

MAX_LISTED = 50  # instances named in a report; the rest are counted


def rest_ids(endpoint: Endpoint, policy: RetryPolicy) -> set[str]:
    """Every instance ID the server lists in /instances now."""
    return {work.item for work in listing.instances(endpoint, policy)}


def index_md5s(index: Path) -> dict[str, str]:
    """Instance ID -> MD5 of its DICOM file, from a stopped server's SQLite index."""
    with open_index(index) as con:
        rows = con.execute("SELECT r.publicId, a.uncompressedMD5 FROM AttachedFiles a "
                           "JOIN Resources r ON r.internalId = a.id WHERE a.fileType = ?",
                           (int(FileType.DICOM),)).fetchall()
    return {str(iid): str(md5).lower() for iid, md5 in rows}


def first_row_after(index: Path, seq: int) -> int | None:
    """The first DICOM attachment row of an instance that the change log lists after `seq`
    (None: none), read from a stopped server's index. Rows and changes are written in one
    transaction per instance, so every later instance has a later row."""
    with open_index(index) as con:
        row = con.execute("SELECT MIN(a.rowid) FROM Changes c JOIN AttachedFiles a "
                          "ON a.id = c.internalId WHERE c.seq > ? AND a.fileType = ?",
                          (seq, int(FileType.DICOM))).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def md5s(endpoint: Endpoint, ids: Iterable[str], workers: int,
         policy: RetryPolicy) -> dict[str, str | None]:
    """Instance ID -> its MD5 on `endpoint` (None: not there), asked in parallel."""
    def one(iid: str) -> tuple[str, str | None]:
        return iid, md5_of(endpoint, iid, policy)[0]

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return dict(pool.map(one, list(ids)))


@dataclass
class Comparison:
    """A source's instances against a target's: sets, MD5s and counts."""

    source_count: int = 0
    target_count: int = 0
    checked: int = 0  # MD5s compared in this round
    checked_before: int = 0  # MD5s found equal in an earlier round (still in the set)
    missing: list[str] = field(default_factory=list)  # on the source, not on the target
    different: list[str] = field(default_factory=list)  # MD5 differs
    extra: list[str] = field(default_factory=list)  # on the target, not on the source
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.different or self.errors)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "source_count": self.source_count,
                "target_count": self.target_count, "checked": self.checked,
                "checked_before": self.checked_before, "missing": len(self.missing),
                "different": len(self.different), "extra": len(self.extra),
                "errors": len(self.errors),
                "missing_ids": self.missing[:MAX_LISTED],
                "different_ids": self.different[:MAX_LISTED],
                "extra_ids": self.extra[:MAX_LISTED], "error_list": self.errors[:MAX_LISTED]}


def compare(source_md5: dict[str, str | None], target: Endpoint, target_ids: set[str],
            checked: Checked, workers: int, policy: RetryPolicy,
            source: Endpoint | None = None) -> Comparison:
    """Compare every source instance with the target: the set, and each MD5 not found equal
    in an earlier round. `source_md5` maps each source ID to its MD5, or to None when it is to
    be asked from `source`."""
    out = Comparison(source_count=len(source_md5), target_count=len(target_ids))
    out.missing = sorted(set(source_md5) - target_ids)
    out.extra = sorted(target_ids - set(source_md5))
    todo = [iid for iid in source_md5 if iid in target_ids and not checked.has(iid)]
    out.checked_before = sum(1 for iid in source_md5 if iid in target_ids and checked.has(iid))
    try:
        unknown = [iid for iid in todo if source_md5[iid] is None]
        if unknown and source is not None:
            source_md5 = {**source_md5, **md5s(source, unknown, workers, policy)}
        theirs = md5s(target, todo, workers, policy)
    except OrthancHttpError as exc:
        out.errors.append(exc.message)
        return out
    out.checked = len(todo)
    for iid in todo:
        mine, other = source_md5.get(iid), theirs.get(iid)
        if other is None:
            out.missing.append(iid)
        elif mine is None:
            continue  # deleted on the source meanwhile: the set comparison of the next round
        elif mine != other:
            out.different.append(iid)
        else:
            checked.add(iid, mine)
    return out


class Checked:
    """Instance IDs whose MD5 was found equal on both sides, kept in a JSON file."""

    def __init__(self, path: Path):
        self.path = path
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        self.md5: dict[str, str] = {str(k): str(v) for k, v in data.items()} \
            if isinstance(data, dict) else {}

    @classmethod
    def beside(cls, state_dir: Path, source: str, target: str) -> Checked:
        digest = hashlib.sha256(f"{source}\0{target}".encode()).hexdigest()[:24]
        return cls(Path(state_dir) / f"checked-{digest}.json")

    def has(self, iid: str) -> bool:
        return iid in self.md5

    def add(self, iid: str, md5: str) -> None:
        self.md5[iid] = md5

    def __len__(self) -> int:
        return len(self.md5)

    def save(self) -> None:
        """Write atomically (temp file, fsync, rename)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".checked-")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(self.md5, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)
