"""The migrating start: how `upgrade` brings a PostgreSQL / MySQL index to the new plugin.

The index plugins ignore `--upgrade` ("No upgrade is needed") and raise their
revision when Orthanc opens the database at an ordinary start: minutes to hours
on a large database, with Orthanc not answering, and under systemd within the
unit's start timeout (Debian: TimeoutSec=600). So for these backends the upgrade
step starts the binary once in the foreground, as the service user, on the
configuration the service will use, and watches it: its log lines shown live,
the plan's time limit, and the stall rule of host/processes.py, where a running
statement on the index database counts as activity (the server works, Orthanc
waits). Once its REST API answers, the database is open, so migrated, and the
child is ended with SIGTERM; start-service then starts a database with nothing
left to do. The child's PID is journaled, so a rollback after a crash ends it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.errors import CommandError, OrchestratorError, OrthancHttpError
from orchestrator.host.databases import Connection, DatabaseError
from orchestrator.host.host import Host
from orchestrator.host.processes import Ended, Watched
from orchestrator.orthanc.backends import index_database, plugin_version
from orchestrator.orthanc.plugin_index import max_revision, read_database_index, read_index_tables
from orchestrator.orthanc.upgrade_log import message_of
from orchestrator.steps.base import RunContext
from orchestrator.steps.kind import StepKind

SYSTEMD_DEFAULT_START = 90.0  # DefaultTimeoutStartSec when the unit sets none
_SPAN = re.compile(r"(\d+(?:\.\d+)?)\s*(us|ms|s|min|h|d)?")
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0, None: 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_timespan(text: str) -> float | None:
    """Seconds of a systemd time span ("10min", "1min 30s", "600000000" µs for *USec),
    None for "infinity"; pure."""
    text = text.strip()
    if not text or text == "infinity":
        return None
    if text.isdigit():
        return int(text) / 1e6  # `systemctl show -p TimeoutStartUSec --value` on old systemd
    return sum(float(n) * _UNIT[u] for n, u in _SPAN.findall(text))


def unit_start_timeout(host: Host, unit: str) -> float | None:
    """The unit's start timeout in seconds (None: infinite or unknown); a read."""
    try:
        done = host.runner.run(["systemctl", "show", "-p", "TimeoutStartUSec", "--value", unit],
                               timeout=30, check=True)
    except (CommandError, OrchestratorError):
        return None
    return parse_timespan(done.stdout)


def drop_in(unit: str, seconds: float) -> str:
    """The drop-in that gives a migrating start `seconds` (to remove after the upgrade)."""
    return (f"/etc/systemd/system/{unit}.service.d/orchestrator-migration.conf: "
            f"[Service] TimeoutStartSec={int(seconds)} (then `systemctl daemon-reload`)")


def start_timeout_warning(host: Host, ctx: RunContext) -> list[str]:
    """Preflight: warn when systemd's start timeout could kill a plugin's migration."""
    if host.service.kind != "systemd":
        return []
    kinds = [s.kind for s in ctx.steps]
    if StepKind.START_SERVICE not in kinds:
        return []
    start = kinds.index(StepKind.START_SERVICE)
    if StepKind.UPGRADE in kinds[:start]:
        return []  # the upgrade step migrates outside the unit, under its own watchdog
    unit = ctx.plan.service.name
    limit = unit_start_timeout(host, unit)
    if limit is None:
        return []
    return [f"migration-start-timeout: the index plugin migrates its database at the first "
            f"start, and systemd kills a start of {unit} after {limit:g}s; add an `upgrade` "
            f"step before start-service (it migrates under a watchdog), or a drop-in for the "
            f"duration: {drop_in(unit, 86400)}"]


# -- the watched start -------------------------------------------------------------------

@dataclass
class Throttle:
    """Ask `probe` at most every `every` seconds; between asks, repeat its last answer."""

    probe: Callable[[], bool]
    every: float
    last: float = 0.0
    answer: bool = False
    sticky: bool = False  # once true, stays true (ready)

    def __call__(self) -> bool:
        now = time.monotonic()
        if (self.sticky and self.answer) or now - self.last < self.every:
            return self.answer
        self.last = now
        try:
            self.answer = bool(self.probe())
        except Exception:  # noqa: BLE001 - a probe that fails says "no" (not up, not busy)
            self.answer = False
        return self.answer


def answers(host: Host) -> Callable[[], bool]:
    """True once the service's REST API answers /system (the database is open)."""
    def probe() -> bool:
        client = host.orthanc()
        try:
            return bool(client.system())
        except OrthancHttpError as exc:
            return exc.status == 401  # up (the database opened), the credentials are wrong
        finally:
            client.close()
    return Throttle(probe, 0.25, sticky=True)


def busy(host: Host, conn: Connection) -> Callable[[], bool]:
    """True while a statement runs on the index database (the migration's work)."""
    return Throttle(lambda: host.databases.busy(conn), 2.0)


def nothing_to_migrate(host: Host, ctx: RunContext) -> str | None:
    """Why no start is needed (the database is at the revision the installed plugin wants),
    or None when a migration may be pending or the table does not know the plugin."""
    section = index_database(ctx.config())
    if section is None:
        return None
    version = plugin_version(ctx.config(), section.engine)
    wanted = max_revision(section.engine, version)
    if wanted is None:
        return None
    try:
        _, revision, _ = read_index_tables(section, host.databases)
    except DatabaseError:
        return None
    if revision == wanted:
        return (f"nothing to migrate: {section.database} is at revision {revision}, "
                f"the one plugin {version} expects (fleet: the revision does not change, "
                "nodes sharing the database may be upgraded one at a time)")
    return None


def index_connection(ctx: RunContext) -> Connection | None:
    section = index_database(ctx.config())
    return section.connection() if section is not None else None


def verdict(watched: Watched) -> tuple[bool, str]:
    """(ok, message) of a migrating start."""
    tail = watched.lines[-12:]
    errors = [message_of(line) for line in tail if line.startswith("E")]
    last = errors[0] if errors else (message_of(tail[-1]) if tail else "no log line")
    if watched.ended == Ended.READY:
        return True, f"the index database opened after {watched.elapsed:.1f}s (migrated)"
    if watched.ended == Ended.NOT_RUN:
        return True, ("would start Orthanc once so that the plugin migrates the database "
                      "(fleet: the revision changes: stop every node sharing the database, "
                      "let this one migrate, then start the others)")
    if watched.ended == Ended.EXITED:
        return False, f"Orthanc exited with {watched.returncode} before answering: {last}"
    if watched.ended == Ended.STALL:
        return False, (f"no log line and no database activity for {watched.quiet:.0f}s: "
                       f"stopped ({last})")
    return False, f"the migrating start ran past its limit ({watched.ended.value}): {last}"


def revision_check(host: Host, ctx: RunContext, before: dict[str, int] | None,
                   revision_before: int | None) -> tuple[int | None, dict[str, int], str | None]:
    """(revision, counts, problem) of the index database after the migrating start."""
    section = index_database(ctx.config())
    if section is None:
        return None, {}, "the configuration holds no index database any more"
    facts = read_database_index(section, host.databases)
    if facts.error is not None:
        return None, {}, f"cannot read the index database after the start: {facts.error}"
    wanted = max_revision(section.engine, plugin_version(ctx.config(), section.engine))
    if wanted is not None and facts.revision != wanted:
        return facts.revision, dict(facts.counts), (
            f"the index is at revision {facts.revision}; the installed plugin expects {wanted}")
    if revision_before is not None and facts.revision is not None \
            and facts.revision < revision_before:
        return facts.revision, dict(facts.counts), (
            f"the revision went down from {revision_before} to {facts.revision}")
    if before and dict(facts.counts) != dict(before):
        return facts.revision, dict(facts.counts), (
            f"the index holds {facts.counts} after the start, {before} before")
    return facts.revision, dict(facts.counts), None
