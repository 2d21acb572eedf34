"""--verify: every source instance is on the target, with the same MD5.

MD5s come from `attachments/dicom/md5` (stored when StoreMD5ForAttachments
was on); where a side does not store them the file itself is hashed, and the
report says so. The source is listed afresh with /instances (the complete set,
not the change log), so the check does not trust the copy's own bookkeeping.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from orchestrator.errors import OrthancHttpError
from orchestrator.replication import listing
from orchestrator.replication.outcome import MAX_LISTED, CopyOutcome, Result
from orchestrator.replication.pool import RetryPolicy, TransferPool, Work
from orchestrator.replication.state import Watermark
from orchestrator.replication.target import count_instances, md5_of
from orchestrator.replication.transport import Endpoint


@dataclass
class VerifyReport:
    counts: Counter = field(default_factory=Counter)  # equal, missing, different, gone, error
    hashed: Counter = field(default_factory=Counter)  # side -> instances hashed (no stored MD5)
    problems: list[dict] = field(default_factory=list)
    aborted: str | None = None
    target_extra: int | None = None

    def add(self, result: Result) -> None:
        tag = result.reason.split(":", 1)[0] if result.outcome is not CopyOutcome.PRESENT else "equal"
        if result.outcome is CopyOutcome.PRESENT:
            for side in ("source", "target"):
                if side in result.reason:
                    self.hashed[side] += 1
        self.counts[tag if result.outcome is not CopyOutcome.SKIPPED else "gone"] += 1
        if result.outcome is CopyOutcome.FAILED and len(self.problems) < MAX_LISTED:
            self.problems.append({"item": result.item, "reason": result.reason})

    def to_dict(self) -> dict:
        notes = [f"{side} does not store MD5s (StoreMD5ForAttachments off): hashed "
                 f"{n} files instead" for side, n in sorted(self.hashed.items())]
        ok = self.aborted is None and not any(self.counts.get(k) for k in
                                              ("missing", "different", "error"))
        return {"ok": ok, "checked": sum(self.counts.values()),
                "equal": self.counts.get("equal", 0), "missing": self.counts.get("missing", 0),
                "different": self.counts.get("different", 0),
                "errors": self.counts.get("error", 0), "gone": self.counts.get("gone", 0),
                "target_extra": self.target_extra, "problems": list(self.problems),
                "notes": notes, "aborted": self.aborted}


def compare(item: str, source_md5: str | None, source_how: str, target_md5: str | None,
            target_how: str) -> Result:
    """The verdict for one instance from the MD5s of both sides (None: not there)."""
    if source_md5 is None:
        return Result(CopyOutcome.SKIPPED, item, "gone from the source")
    if target_md5 is None:
        return Result(CopyOutcome.FAILED, item, "missing: not on the target")
    if source_md5 != target_md5:
        return Result(CopyOutcome.FAILED, item, f"different: MD5 {source_md5} on the source, "
                      f"{target_md5} on the target")
    hashed = [side for side, how in (("source", source_how), ("target", target_how))
              if how == "hashed"]
    return Result(CopyOutcome.PRESENT, item, " ".join(hashed))


def verify_replica(source: Endpoint, target: Endpoint, workers: int,
                   policy: RetryPolicy) -> dict:
    report = VerifyReport()

    def check(iid: str) -> Result:
        try:
            source_md5, source_how = md5_of(source, iid, policy)
            if source_md5 is None:
                return compare(iid, None, source_how, None, "")
            target_md5, target_how = md5_of(target, iid, policy)
        except OrthancHttpError as exc:
            return Result(CopyOutcome.FAILED, iid, f"error: {exc.message}")
        return compare(iid, source_md5, source_how, target_md5, target_how)

    pool = TransferPool(workers, on_result=report.add, save=lambda watermark: None)
    ids = (Work(None, w.item) for w in listing.instances(source, policy))
    report.aborted = pool.run(ids, check, Watermark())
    target_count = count_instances(target, policy)
    if target_count is not None:
        report.target_extra = max(0, target_count - report.counts.get("equal", 0)
                                  - report.counts.get("different", 0))
    return report.to_dict()
