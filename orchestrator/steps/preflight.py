"""preflight: read every fact the upgrade depends on, and refuse on a blocking hazard.

Reads only (it runs in a dry run too, which makes `plan` a true preflight):
the binary's version, the configuration, the index the upgrade will open
(the relocation's source when there is one), the service's state, the REST
counts when it runs (the live service holds its index, so its schema comes
from /system then), free space, and the hazard table. Its facts (counts,
schema, version) are what health-check compares against later.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from orchestrator.errors import OrthancHttpError, RefusedError
from orchestrator.steps.base import RunContext, StepBase, counts_text, service_config
from orchestrator.steps.health import REST_COUNT_KEYS

MB = 1024 * 1024


class Preflight(StepBase):
    kind = "preflight"

    def describe(self) -> str:
        allowed = self.options.get("allow_hazards") or []
        extra = f" (accepting {', '.join(allowed)})" if allowed else ""
        return f"check binary, config, index, service, free space and hazards{extra}"

    def apply(self, host: Any, ctx: RunContext, intent: dict) -> dict:
        from orchestrator.orthanc.binary import binary_version, expected_schema
        from orchestrator.orthanc.hazards import Severity, assess
        from orchestrator.orthanc.index import read_index

        svc = ctx.plan.service
        version = binary_version(svc.binary, host.runner)
        config = service_config(ctx)
        sqlite = config.index_backend == "sqlite"
        source = _relocation_source(ctx)
        index_dir = source or Path(config.index_dir)
        index = read_index(index_dir) if sqlite else None
        status = host.service.status()
        warnings = list(config.warnings) + host.service.warnings()

        counts, counts_from, system = None, None, None
        if status.running:
            system, rest_counts = _rest_facts(host)
            if source is None:
                counts, counts_from = rest_counts, "rest"
            if index is not None and index.locked and source is None and system:
                # The live service holds its index: its schema is the one /system reports.
                index = dataclasses.replace(index, locked=False, error=None,
                                            schema_version=system.get("DatabaseVersion"))
        if counts is None and index is not None and index.readable:
            counts, counts_from = dict(index.counts), "index"

        hazards = assess(config, index, version)
        allowed = set(self.options.get("allow_hazards") or [])
        blockers = [h for h in hazards if h.severity == Severity.BLOCKER and h.code not in allowed]
        accepted = [h for h in hazards if h.severity == Severity.BLOCKER and h.code in allowed]
        warnings += [f"{h.code}: {h.message}" for h in hazards if h.severity == Severity.WARNING]
        warnings += [f"{h.code}: accepted by allow_hazards: {h.message}" for h in accepted]
        if blockers:
            first = blockers[0]
            more = "; ".join(f"{h.code}: {h.message}" for h in blockers[1:])
            raise RefusedError(
                f"preflight refuses: {first.code}: {first.message}" + (f"; also {more}" if more else ""),
                hint=f"{first.hint} (to go on anyway, knowingly: preflight: "
                     f"{{allow_hazards: [{first.code}]}})")
        free = _free_space(host, ctx, config, index, self.options.get("min_free_mb"))
        schema = index.schema_version if index is not None else (system or {}).get("DatabaseVersion")
        facts = {
            "binary": str(svc.binary), "binary_version": str(version),
            "expected_schema": expected_schema(version),
            "config_files": [str(f) for f in config.files], "backend": config.index_backend,
            "storage_dir": str(config.storage_dir), "index_dir": str(config.index_dir),
            "upgrade_source": str(index_dir), "schema_version": schema,
            "index": index.to_dict() if index is not None else None,
            "counts": counts, "counts_from": counts_from,
            "service": {"manager": host.service.kind, **status.to_dict()},
            "running_version": (system or {}).get("Version"),
            "running_database_version": (system or {}).get("DatabaseVersion"),
            "hazards": [h.to_dict() for h in hazards], "warnings": warnings,
            "free": free,
            "summary": f"Orthanc {version}, schema {schema if schema is not None else '?'} -> "
                       f"{expected_schema(version)}, {counts_text(counts)}; service "
                       f"{status.state.value}",
        }
        return facts


def _relocation_source(ctx: RunContext) -> Path | None:
    for spec in ctx.plan.steps:
        if spec.kind == "relocate" and spec.options.get("from"):
            return Path(spec.options["from"])
    return None


def _rest_facts(host: Any) -> tuple[dict | None, dict | None]:
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
    counts = {k: int(stats[v]) for k, v in REST_COUNT_KEYS.items()}
    return system, counts


def _free_space(host: Any, ctx: RunContext, config: Any, index: Any, min_free_mb: int | None) -> dict:
    """Check room for each index copy the plan makes; refuse when there is not enough."""
    from orchestrator.steps.snapshot import snapshot_dir

    index_bytes = 0
    if index is not None and index.exists:
        index_bytes = sum(Path(f).stat().st_size for f in index.files if Path(f).exists())
    needs: list[tuple[Path, int, str]] = []
    for spec in ctx.plan.steps:
        if spec.kind == "snapshot" and config.index_backend == "sqlite":
            needs.append((snapshot_dir(ctx, spec.options), index_bytes, "the snapshot"))
        elif spec.kind == "relocate":
            needs.append((Path(spec.options["to"]), index_bytes, "the relocated index"))
    if min_free_mb:
        needs.append((Path(config.index_dir), int(min_free_mb) * MB, "min_free_mb"))
    out = {}
    for where, need, what in needs:
        free = host.files.free_bytes(where)
        out[str(where)] = {"free": free, "need": need, "for": what}
        if free < need:
            raise RefusedError(f"not enough free space for {what} at {where}: "
                               f"{free // MB} MB free, {need // MB + 1} MB needed",
                               hint="free some space, or point the step at another folder")
    return out
