"""verify-copy: during the freeze, prove the new server holds exactly what the old one holds.

Both instance sets are listed afresh (the old server over REST, or from its
index when it is stopped), every MD5 not already found equal by catch-up is
compared, and the counts must match. What the new server holds beyond the old
one, less what it held before the move, was deleted on the old server since
the copy began: reported, and deleted on the new one too with
`apply_deletions: true`. Anything missing or different fails the step, and the
rollback lifts the freeze with the old server untouched.

A verification of a copy that a dry run did not make is described, not run.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.errors import RefusedError
from orchestrator.host.host import Host
from orchestrator.orthanc.index import index_path
from orchestrator.replication.inventory import Checked, Comparison, compare, index_md5s, rest_ids
from orchestrator.replication.target import count_instances
from orchestrator.replication.transport import Endpoint
from orchestrator.steps.base import (RunContext, StepBase, StepFacts, StepIntent, StepOptions,
                                     latest)
from orchestrator.steps.bluegreen import pair as pairs
from orchestrator.steps.kind import StepKind
from orchestrator.steps.record import Json


@dataclass(frozen=True, kw_only=True)
class VerifyCopyOptions(StepOptions):
    apply_deletions: bool = False


@dataclass(frozen=True, kw_only=True)
class VerifyCopyFacts(StepFacts):
    comparison: Json = None
    deleted_on_old: int = 0
    deletions_applied: int = 0


class VerifyCopy(StepBase[VerifyCopyOptions, StepIntent, VerifyCopyFacts]):
    kind = StepKind.VERIFY_COPY
    Options = VerifyCopyOptions
    Facts = VerifyCopyFacts

    def describe(self) -> str:
        more = ", apply deletions" if self.options.apply_deletions else ""
        return f"compare both servers: instance sets, every MD5, counts{more}"

    def apply(self, host: Host, ctx: RunContext, intent: StepIntent) -> VerifyCopyFacts:
        return VerifyCopyFacts(summary="compare the sets and MD5s of both servers")

    def verify(self, host: Host, ctx: RunContext, intent: StepIntent,
               facts: VerifyCopyFacts) -> VerifyCopyFacts:
        p = pairs.pair(ctx)
        checked = Checked.beside(pairs.state_dir(ctx), p.source.base_url, p.target.base_url)
        if pairs.answers(p.source):
            mine: dict = dict.fromkeys(rest_ids(p.source, p.policy))
            where = "over REST"
        else:
            mine, where = index_md5s(index_path(ctx.config().index_dir)), "from its index"
        found = compare(mine, p.target, rest_ids(p.target, p.policy), checked, p.workers,
                        p.policy, source=p.source)
        checked.save()
        before = set(_extra_before(ctx))
        deleted = [iid for iid in found.extra if iid not in before]
        applied = 0
        if deleted and self.options.apply_deletions:
            applied = sum(host.changes.apply(f"delete instance {iid} on {p.target.base_url} "
                                             "(deleted on the old server)",
                                             _delete, p.target, iid, dry_result=1)
                          for iid in deleted)
        if not found.ok:
            raise RefusedError(f"the copy differs: {_text(found)}",
                               hint="the rollback lifts the freeze; the old server is untouched")
        # The counts as each server's /statistics states them, beside the listed sets.
        kept = len(found.extra) - applied
        counted = count_instances(p.target, p.policy)
        if counted is not None and counted != found.source_count + kept:
            raise RefusedError(f"the new server counts {counted} instances, expected "
                               f"{found.source_count} of the old server + {kept} of its own",
                               hint="it changed during the freeze: are writes reaching it?")
        notes = [f"{len(deleted)} instances were deleted on the old server since the copy began"
                 + ("; deleted on the new one too" if applied else
                    "; kept on the new one (verify-copy: {apply_deletions: true} deletes them)")
                 ] if deleted else []
        return VerifyCopyFacts(comparison=found.to_dict(), deleted_on_old=len(deleted),
                               deletions_applied=applied, notes=tuple(notes),
                               summary=f"equal ({where}): {_text(found)}")


def _delete(target: Endpoint, iid: str) -> int:
    answer = target.request("DELETE", f"/instances/{iid}")
    if answer.status not in (200, 404):
        raise RefusedError(f"DELETE {target.base_url}/instances/{iid}: HTTP {answer.status}")
    return 1


def _extra_before(ctx: RunContext) -> tuple[str, ...]:
    """What the new server held before the move that the old one lacked (replicate's intent)."""
    record = latest(ctx, StepKind.REPLICATE)
    extra = (record.intent or {}).get("target_extra") if record is not None else None
    return tuple(str(i) for i in extra) if isinstance(extra, list) else ()


def _text(c: Comparison) -> str:
    return (f"{c.source_count} instances on the old server, {c.target_count} on the new; "
            f"{c.checked + c.checked_before} MD5s equal ({c.checked} now), {len(c.missing)} "
            f"missing, {len(c.different)} different, {len(c.extra)} only on the new"
            + (f", errors: {c.errors[0]}" if c.errors else ""))
