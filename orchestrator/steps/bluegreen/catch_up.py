"""catch-up: copy what arrived on the old server since the last pass, until the copy keeps up.

Each pass follows the old server's /changes from the cursor the previous pass
saved. The passes stop when one copies fewer than `instances` or takes less than
`seconds` (what is left will fit in the write freeze); after `passes` passes the
old server takes writes faster than the new one ingests them and the step
fails (the move is rolled back; nothing was changed on the old server).

Then, still outside the freeze, it compares the MD5 of every instance copied
so far on both servers and keeps those found equal (`inventory.Checked`), so
that the verify step during the freeze only checks what is new.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.errors import RefusedError
from orchestrator.host.host import Host
from orchestrator.journal import StepRecord
from orchestrator.replication.follow import Pass, follow
from orchestrator.replication.inventory import Checked, compare, rest_ids
from orchestrator.steps.base import RunContext, StepBase, StepFacts, StepIntent, StepOptions
from orchestrator.steps.bluegreen import pair as pairs
from orchestrator.steps.kind import StepKind


@dataclass(frozen=True, kw_only=True)
class CatchUpOptions(StepOptions):
    instances: int = 100  # a pass that copies fewer is the last
    seconds: float = 5.0  # a pass shorter than this is the last
    passes: int = 20
    md5: bool = True  # compare the MD5s of what is copied so far (outside the freeze)


@dataclass(frozen=True, kw_only=True)
class CatchUpFacts(StepFacts):
    passes: int = 0
    copied: int = 0
    failed: int = 0
    cursor: int = 0
    md5_checked: int = 0
    md5_different: int = 0


def converged(last: Pass, options: CatchUpOptions) -> bool:
    """Whether the pass was small or short enough to be the last one before the freeze.
    Failed instances do not hold it back: every pass retries them first, the freeze's final
    catch-up too, and verify-copy finds any still missing."""
    return last.aborted is None and (last.copied < options.instances
                                     or last.seconds < options.seconds)


class CatchUp(StepBase[CatchUpOptions, StepIntent, CatchUpFacts]):
    kind = StepKind.CATCH_UP
    Options = CatchUpOptions
    Facts = CatchUpFacts

    def describe(self) -> str:
        o = self.options
        return (f"copy what arrived since, pass after pass, until one copies fewer than "
                f"{o.instances} instances or takes under {o.seconds:g} s")

    def apply(self, host: Host, ctx: RunContext, intent: StepIntent) -> CatchUpFacts:
        p = pairs.pair(ctx)
        copied = failed = 0
        for n in range(1, self.options.passes + 1):
            done = follow(p, host.changes)
            copied += done.copied
            failed = done.failed
            ctx.persist(self.id, {"passes": n, "cursor": done.cursor, "copied": copied})
            ctx.progress(self.id, f"pass {n}: {done.text()}")
            if done.aborted:
                raise RefusedError(f"catch-up pass {n} stopped: {done.aborted}",
                                   hint="`orchestrator resume` continues from where it stopped")
            if converged(done, self.options):
                break
        else:
            raise RefusedError(f"the copy did not catch up in {self.options.passes} passes "
                               f"(the last copied {done.copied} in {done.seconds:.1f} s, "
                               f"{done.failed} failed)",
                               hint="the old server takes writes faster than the new one stores "
                               "them: retry at a quieter time, or raise catch-up's limits")
        facts = dict(passes=n, copied=copied, failed=failed, cursor=done.cursor)
        if self.options.md5:
            checked = Checked.beside(pairs.state_dir(ctx), p.source.base_url, p.target.base_url)
            found = compare(dict.fromkeys(rest_ids(p.source, p.policy)), p.target,
                            rest_ids(p.target, p.policy), checked, p.workers, p.policy,
                            source=p.source)
            host.changes.apply(f"keep the {len(checked)} MD5s found equal", checked.save)
            facts.update(md5_checked=found.checked + found.checked_before,
                         md5_different=len(found.different))
        summary = (f"{n} passes, copied {copied}; the last: {done.text()}"
                   + (f"; {facts.get('md5_checked', 0)} MD5s equal" if self.options.md5 else ""))
        return CatchUpFacts(summary=summary, **facts)

    def undo(self, host: Host, ctx: RunContext, record: StepRecord) -> str:
        return "left the copy on the new server for inspection; the old server was not changed"
