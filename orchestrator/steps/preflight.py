"""preflight: read every fact the upgrade depends on, then judge them; refuse on a hazard.

`read_facts` only reads (it runs in a dry run too, which makes `plan` a true
preflight): the binary's version, the configuration, the index the upgrade
will open (the relocation's source when there is one), the service's state,
the REST counts when it runs (the live service holds its index, so its schema
comes from /system then), free space where the other steps copy, and the
hazard table. `judge` is pure: those facts and the plan's allowances in, a
verdict out. The facts (counts, schema, version) are what health-check and
upgrade compare against later.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import OrthancHttpError, RefusedError
from orchestrator.host.host import Host
from orchestrator.orthanc.config import OrthancConfig
from orchestrator.orthanc.backends import index_database
from orchestrator.orthanc.binary import binary_version, expected_schema, parse_version
from orchestrator.orthanc.hazards import Severity, assess
from orchestrator.orthanc.index import IndexFacts, read_index
from orchestrator.orthanc.plugin_index import DatabaseView, view_database
from orchestrator.steps.base import (Needs, RunContext, StepBase, StepFacts, StepIntent,
                                     StepOptions, counts_text, latest)
from orchestrator.steps.healthy import counts_of
from orchestrator.steps.kind import StepKind
from orchestrator.steps.migration import start_timeout_warning
from orchestrator.steps.snapshot import snapshot_dir
from orchestrator.steps.record import Json, Record

MB = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class PreflightOptions(StepOptions):
    allow_hazards: tuple[str, ...] = ()
    min_free_mb: int | None = None


@dataclass(frozen=True, kw_only=True)
class HazardFact(Record):
    code: str
    severity: Severity
    message: str
    hint: str


@dataclass(frozen=True, kw_only=True)
class FreeSpace(Record):
    free: int
    need: int
    purpose: str = field(metadata={"key": "for"})


@dataclass(frozen=True, kw_only=True)
class PreflightFacts(StepFacts):
    binary: Path
    binary_version: str
    expected_schema: int
    config_files: tuple[Path, ...] = ()
    backend: str
    storage_dir: Path
    index_dir: Path
    upgrade_source: Path
    schema_version: int | None = None
    index: dict[str, Json] | None = None
    counts: dict[str, int] | None = None
    counts_from: str | None = None
    service: dict[str, Json] = field(default_factory=dict)
    running_version: str | None = None
    running_database_version: int | None = None
    hazards: tuple[HazardFact, ...] = ()
    free: dict[str, FreeSpace] = field(default_factory=dict)
    expects_version: str | None = None  # what a later step insists the binary is
    binary_may_change: bool = False  # a step before that one may replace the binary
    database: dict[str, Json] | None = None  # PostgreSQL / MySQL: sections and index facts
    revision: int | None = None  # the plugin's revision of a database index (GlobalProperties 4)


@dataclass(frozen=True)
class Verdict:
    """What preflight concludes: a refusal (or None) and the warnings to show."""

    refusal: RefusedError | None
    warnings: tuple[str, ...]


class Preflight(StepBase[PreflightOptions, StepIntent, PreflightFacts]):
    kind = StepKind.PREFLIGHT
    Options = PreflightOptions
    Facts = PreflightFacts

    def describe(self) -> str:
        allowed = self.options.allow_hazards
        extra = f" (accepting {', '.join(allowed)})" if allowed else ""
        return f"check binary, config, index, service, free space and hazards{extra}"

    def apply(self, host: Host, ctx: RunContext, intent: StepIntent) -> PreflightFacts:
        facts = read_facts(host, ctx, self.options)
        verdict = judge(facts, self.options)
        if verdict.refusal is not None:
            raise verdict.refusal
        return dataclasses.replace(facts, warnings=facts.warnings + verdict.warnings)


def preflight_facts(ctx: RunContext) -> PreflightFacts | None:
    """The facts the run's preflight recorded, or None (no preflight, or not done)."""
    rec = latest(ctx, StepKind.PREFLIGHT)
    if rec is None or not rec.facts:
        return None
    return PreflightFacts.from_json(rec.facts, where=f"journal: step {rec.id}: facts")


# -- reading -----------------------------------------------------------------------------

def read_facts(host: Host, ctx: RunContext, options: PreflightOptions) -> PreflightFacts:
    """Read what the upgrade depends on (reads only)."""
    svc = ctx.plan.service
    needs = [s.needs(ctx) for s in ctx.steps]
    version = binary_version(svc.binary, host.runner)
    config = ctx.config()
    source = next((n.index_source for n in needs if n.index_source is not None), None)
    index_dir = source or Path(config.index_dir)
    index = read_index(index_dir) if config.index_backend == "sqlite" else None
    index_database(config)  # a section present but not enabled is bad input (exit 2)
    database = view_database(config, host.databases)
    status = host.service.status()

    counts, counts_from, system = None, None, None
    if status.running:
        system, live_counts = _rest_facts(host)
        if source is None:
            counts, counts_from = live_counts, "rest"
        if index is not None and index.locked and source is None and system:
            # The live service holds its index: its schema is the one /system reports.
            index = dataclasses.replace(index, locked=False, error=None,
                                        schema_version=system.get("DatabaseVersion"))
    if counts is None and index is not None and index.readable:
        counts, counts_from = dict(index.counts), "index"
    db = database.facts
    if counts is None and db is not None and db.counts and db.error is None:
        counts, counts_from = dict(db.counts), "database"
    schema = index.schema_version if index is not None else (system or {}).get("DatabaseVersion")
    if schema is None and db is not None:
        schema = db.schema_version
    after = next((n.binary_after for n in needs if n.binary_after), None)  # a package step's
    judged = parse_version(after) if after else version
    hazards = tuple(HazardFact(code=h.code, severity=h.severity, message=h.message, hint=h.hint)
                    for h in assess(config, index, judged, **database.hazard_args(),
                                    dump_free=_dump_free(host, ctx, database)))
    expects = next((n.expects_version for n in needs if n.expects_version), None)
    return PreflightFacts(
        binary=Path(svc.binary), binary_version=str(version),
        expected_schema=expected_schema(judged),
        config_files=tuple(Path(f) for f in config.files), backend=config.index_backend,
        storage_dir=Path(config.storage_dir), index_dir=Path(config.index_dir),
        upgrade_source=index_dir, schema_version=schema,
        index=index.to_dict() if index is not None else None,
        counts=counts, counts_from=counts_from,
        service={"manager": host.service.kind, **status.to_dict()},
        running_version=(system or {}).get("Version"),
        running_database_version=(system or {}).get("DatabaseVersion"),
        hazards=hazards, free=_free_space(host, config, index, needs, options.min_free_mb),
        expects_version=expects,
        binary_may_change=after is not None or any(
            s.kind == StepKind.COMMAND for s in ctx.steps[:_first_expecting(ctx)]),
        database=database.to_dict() if database.sections else None,
        revision=db.revision if db is not None else None,
        warnings=tuple(config.warnings) + tuple(host.service.warnings())
        + tuple(migration_warnings(host, ctx, database)),
        summary=f"Orthanc {version}" + (f" (the package step installs {after})" if after else "")
                + f", schema {schema if schema is not None else '?'} -> "
                f"{expected_schema(judged)}, {counts_text(counts)}; service "
                f"{status.state.value}")


def _dump_free(host: Host, ctx: RunContext, database: DatabaseView) -> int | None:
    """Free bytes where the plan's snapshot dumps the index database (None: no dump)."""
    if database.facts is None:
        return None
    snaps = [s for s in ctx.steps if s.kind == StepKind.SNAPSHOT]
    return min((host.files.free_bytes(snapshot_dir(ctx, s.options)) for s in snaps),  # type: ignore[arg-type]
               default=None)


def migration_warnings(host: Host, ctx: RunContext, database: DatabaseView) -> list[str]:
    """Warn when the service manager could kill a plugin's migration at the first start."""
    if database.facts is None:
        return []
    return start_timeout_warning(host, ctx)


def _first_expecting(ctx: RunContext) -> int:
    """Position of the first step insisting on a version (steps before it may change it)."""
    return next((i for i, s in enumerate(ctx.steps) if s.needs(ctx).expects_version), len(ctx.steps))


def _rest_facts(host: Host) -> tuple[dict, dict[str, int]]:
    """/system and the /statistics counts of the running service; refuse on 401."""
    client = host.orthanc()
    try:
        system = client.system()
        stats = client.statistics()
    except OrthancHttpError as exc:
        if exc.status == 401:
            raise RefusedError(f"{exc.message}: the service is up, the credentials are wrong",
                               hint="fix service.credentials (password_env, password_file or "
                                    "~/.netrc): the health check would fail the same way") from exc
        raise RefusedError(f"the service runs but its REST API does not answer: {exc.message}",
                           hint=exc.hint or "check service.url") from exc
    finally:
        client.close()
    return system, counts_of(stats)


def _free_space(host: Host, config: OrthancConfig, index: IndexFacts | None, needs: list[Needs],
                min_free_mb: int | None) -> dict[str, FreeSpace]:
    """The room for each copy the plan makes, as needed and as free."""
    index_bytes = 0
    if index is not None and index.exists:
        index_bytes = sum(Path(f).stat().st_size for f in index.files if Path(f).exists())
    sqlite = config.index_backend == "sqlite"
    wanted = [(c.where, index_bytes, c.what) for n in needs for c in n.copies
              if sqlite or not c.sqlite_only]
    if min_free_mb:
        wanted.append((Path(config.index_dir), int(min_free_mb) * MB, "min_free_mb"))
    return {str(where): FreeSpace(free=host.files.free_bytes(where), need=need, purpose=what)
            for where, need, what in wanted}


# -- judging -----------------------------------------------------------------------------

def judge(facts: PreflightFacts, options: PreflightOptions) -> Verdict:
    """Refuse on an unaccepted blocking hazard, too little room, or a binary the plan does not
    expect; otherwise the warnings to show. Pure."""
    allowed = set(options.allow_hazards)
    blockers = [h for h in facts.hazards if h.severity == Severity.BLOCKER and h.code not in allowed]
    accepted = [h for h in facts.hazards if h.severity == Severity.BLOCKER and h.code in allowed]
    warnings = [f"{h.code}: {h.message}" for h in facts.hazards if h.severity == Severity.WARNING]
    warnings += [f"{h.code}: accepted by allow_hazards: {h.message}" for h in accepted]
    if blockers:
        first = blockers[0]
        more = "; ".join(f"{h.code}: {h.message}" for h in blockers[1:])
        return Verdict(RefusedError(
            f"preflight refuses: {first.code}: {first.message}" + (f"; also {more}" if more else ""),
            hint=f"{first.hint} (to go on anyway, knowingly: preflight: "
                 f"{{allow_hazards: [{first.code}]}})"), tuple(warnings))
    for where, room in facts.free.items():
        if room.free < room.need:
            return Verdict(RefusedError(
                f"not enough free space for {room.purpose} at {where}: "
                f"{room.free // MB} MB free, {room.need // MB + 1} MB needed",
                hint="free some space, or point the step at another folder"), tuple(warnings))
    if facts.expects_version and facts.expects_version != facts.binary_version:
        if facts.binary_may_change:
            warnings.append(f"the plan expects Orthanc {facts.expects_version}; {facts.binary} is "
                            f"{facts.binary_version} now (a command step before may replace it)")
        else:
            return Verdict(RefusedError(
                f"preflight refuses: the plan expects Orthanc {facts.expects_version} "
                f"(health-check.expect.version), but {facts.binary} is {facts.binary_version}",
                hint="fix expect.version, or service.binary: the health check would fail "
                     "after the service was stopped"), tuple(warnings))
    return Verdict(None, tuple(warnings))
