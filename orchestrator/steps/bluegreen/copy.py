"""replicate: the bulk copy of a blue/green move, while the old server keeps serving.

Before anything runs it refuses a move that cannot end well: the same server
twice (the same URL after resolving, or the same DatabaseServerIdentifier, which
Orthanc reports from 1.11 on), a new server that
recycles (MaximumStorageSize / MaximumPatientCount in its configuration), a new
server holding data the old one lacks (unless `allow_nonempty`); it warns when
the new server runs an older Orthanc. Then it follows the old server's
/changes from 0 into the new one (`replication.follow`): resumable, since the
cursor is saved as the copy goes, so a rerun after a crash continues.

Undo leaves the copy on the new server for inspection; the old server was
never changed.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import RefusedError
from orchestrator.host.host import Host
from orchestrator.journal import StepRecord
from orchestrator.orthanc.config import load_config
from orchestrator.replication.follow import follow, last_seq
from orchestrator.replication.inventory import rest_ids
from orchestrator.replication.target import connect
from orchestrator.replication.transport import Endpoint
from orchestrator.steps.base import RunContext, StepBase, StepFacts, StepIntent, StepOptions
from orchestrator.steps.bluegreen import pair as pairs
from orchestrator.steps.bluegreen.pair import Login
from orchestrator.steps.kind import StepKind

PROGRESS_EVERY = 50  # instances handled between two progress records in the journal


@dataclass(frozen=True, kw_only=True)
class ReplicateOptions(StepOptions):
    to: str
    credentials: Login | None = None
    target_config: Path | None = None  # the new server's configuration: recycling limits
    allow_nonempty: bool = False
    workers: int = 8
    retries: int = 5
    timeout: float = 120.0


@dataclass(frozen=True, kw_only=True)
class ReplicateIntent(StepIntent):
    source: str  # URLs without credentials
    target: str
    start_seq: int  # the old server's last change when the copy began
    target_extra: tuple[str, ...] = ()  # what the new server held that the old one lacked


@dataclass(frozen=True, kw_only=True)
class ReplicateFacts(StepFacts):
    copied: int = 0
    present: int = 0
    failed: int = 0
    cursor: int = 0
    seconds: float = 0.0


def _addresses(endpoint: Endpoint) -> set[str]:
    try:
        return {info[4][0] for info in socket.getaddrinfo(endpoint.host, endpoint.port,
                                                          type=socket.SOCK_STREAM)}
    except OSError:
        return set()


def _same_address(a: Endpoint, b: Endpoint) -> bool:
    """The same URL after resolving: a shared address, the same port and path."""
    return (a.port, a.prefix) == (b.port, b.prefix) and bool(_addresses(a) & _addresses(b))


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


class Replicate(StepBase[ReplicateOptions, ReplicateIntent, ReplicateFacts]):
    kind = StepKind.REPLICATE
    Options = ReplicateOptions
    Intent = ReplicateIntent
    Facts = ReplicateFacts

    def describe(self) -> str:
        return f"copy every instance into {self.options.to} while the old server serves"

    def check(self, host: Host, ctx: RunContext) -> list[str]:
        p = pairs.pair(ctx)
        if p.source.base_url == p.target.base_url or _same_address(p.source, p.target):
            raise RefusedError(f"the old and the new server are the same ({p.source.base_url})",
                               hint="give the new server's URL in replicate: {to: ...}")
        old = connect(p.source, "old server", p.policy)
        new = connect(p.target, "new server", p.policy)
        ident = old.get("DatabaseServerIdentifier")
        if ident and ident == new.get("DatabaseServerIdentifier"):
            raise RefusedError(f"{p.source.base_url} and {p.target.base_url} are the same server "
                               f"(both report DatabaseServerIdentifier {ident})",
                               hint="give the new server's own URL")
        warnings = []
        if _version(str(new.get("Version", ""))) < _version(str(old.get("Version", ""))):
            warnings.append(f"the new server runs Orthanc {new.get('Version')}, older than the "
                            f"old server's {old.get('Version')}")
        warnings += self._limits()
        if self._begun(ctx) is not None:
            return warnings  # a resumed copy: the new server holds the old one's instances
        extra = sorted(rest_ids(p.target, p.policy) - rest_ids(p.source, p.policy))
        if extra and not self.options.allow_nonempty:
            raise RefusedError(f"the new server {p.target.base_url} already holds {len(extra)} "
                               "instances that the old server does not have",
                               hint="empty it, or allow it with replicate: {allow_nonempty: true}"
                               " (they are then kept, and never counted as deletions)")
        return warnings

    def _limits(self) -> list[str]:
        path = self.options.target_config
        if path is None:
            return ["the new server's recycling limits were not checked: give its configuration "
                    "as replicate: {target_config: ...}"]
        config = load_config(path)
        for key, value in (("MaximumStorageSize", config.max_storage_size),
                           ("MaximumPatientCount", config.max_patient_count)):
            if value:
                raise RefusedError(f"the new server recycles: {key} is {value} "
                                   f"({config.file_defining(key)}); it would delete old patients "
                                   "to make room during the copy",
                                   hint=f"set {key} to 0 on the new server for the move")
        return []

    def _begun(self, ctx: RunContext) -> ReplicateIntent | None:
        """The intent of this run's earlier attempt at the copy (a resume), if any."""
        record = ctx.records.get(self.id)
        return self.intent_of(record) if record is not None else None

    def intend(self, host: Host, ctx: RunContext) -> ReplicateIntent:
        begun = self._begun(ctx)
        if begun is not None:
            return begun  # the move began then: its start and the new server's own data
        p = pairs.pair(ctx)
        target = rest_ids(p.target, p.policy)
        extra = sorted(target - rest_ids(p.source, p.policy)) if target else []
        return ReplicateIntent(source=p.source.base_url, target=p.target.base_url,
                               start_seq=last_seq(p.source, p.policy),
                               target_extra=tuple(extra))

    def apply(self, host: Host, ctx: RunContext, intent: ReplicateIntent) -> ReplicateFacts:
        def progress(handled: int) -> None:
            if handled % PROGRESS_EVERY == 0:
                ctx.persist(self.id, {"handled": handled})

        done = follow(pairs.pair(ctx), host.changes, progress=progress)
        if done.aborted:
            raise RefusedError(f"the copy stopped: {done.aborted}",
                               hint="`orchestrator resume` continues from where it stopped")
        notes = (f"{done.failed} instances failed; catch-up retries them",) if done.failed else ()
        return ReplicateFacts(copied=done.copied, present=done.present, failed=done.failed,
                              cursor=done.cursor, seconds=round(done.seconds, 3),
                              summary=done.text(), notes=notes)

    def undo(self, host: Host, ctx: RunContext, record: StepRecord) -> str:
        intent = self.intent_of(record)
        where = intent.target if intent else self.options.to
        return f"left the copy on {where} for inspection; the old server was not changed"
