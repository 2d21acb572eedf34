"""The pure parts of the database steps: systemd time spans, fingerprints, verdicts."""

from __future__ import annotations

from orchestrator.host.processes import Ended, Watched
from orchestrator.steps.database import Fingerprint, changed
from orchestrator.steps.migration import Throttle, drop_in, parse_timespan, verdict


def test_systemd_time_spans():
    assert parse_timespan("10min") == 600
    assert parse_timespan("1min 30s") == 90
    assert parse_timespan("1h 2min 3.5s") == 3723.5
    assert parse_timespan("600000000") == 600  # µs, as older systemctl prints *USec
    assert parse_timespan("infinity") is None and parse_timespan("") is None
    assert "TimeoutStartSec=86400" in drop_in("orthanc", 86400)


def test_a_database_changed_since_the_dump():
    then = Fingerprint(revision=6, tables=("globalproperties", "resources"),
                       counts={"instances": 3}, writes=10)
    assert not changed(then, then)
    assert changed(then, None)  # unreadable: restore rather than guess
    assert changed(then, Fingerprint(revision=7, tables=then.tables, counts=then.counts,
                                     writes=10))
    assert changed(then, Fingerprint(revision=6, tables=then.tables + ("labels",),
                                     counts=then.counts, writes=10))
    assert changed(then, Fingerprint(revision=6, tables=then.tables, counts=then.counts,
                                     writes=11))
    # MySQL has no row counter: revision, tables and counts decide.
    mysql = Fingerprint(revision=6, tables=("GlobalProperties",), counts={"instances": 3})
    assert not changed(mysql, mysql)


def test_verdicts_of_a_migrating_start():
    ok, text = verdict(Watched(Ended.READY, elapsed=3.2))
    assert ok and "migrated" in text
    lines = ["W1128 09:11:29.678 PluginsManager.cpp:208] Unregistering plugin",
             "E1128 09:11:29.678639 PluginsManager.cpp:153] MySQL plugin is incompatible "
             "with database schema revision: 7",
             "W1128 09:11:29.679422 main.cpp:2105] Orthanc has stopped"]
    ok, text = verdict(Watched(Ended.EXITED, returncode=255, lines=lines))
    assert not ok and "incompatible with database schema revision: 7" in text
    ok, text = verdict(Watched(Ended.STALL, quiet=600, lines=lines))
    assert not ok and "no database activity for 600s" in text
    ok, text = verdict(Watched(Ended.NOT_RUN))
    assert ok and "fleet" in text


def test_throttle_asks_at_most_every_period_and_ready_sticks():
    asked = []

    def probe() -> bool:
        asked.append(1)
        return len(asked) >= 2

    ready = Throttle(probe, every=0.0, sticky=True)
    assert not ready() and ready() and ready()
    assert len(asked) == 2  # sticky: once true, not asked again
    slow = Throttle(lambda: asked.append(1) or True, every=3600)
    assert slow() and slow() and len(asked) == 3

    def failing() -> bool:
        raise OSError("down")

    assert not Throttle(failing, every=0.0)()


def test_preflight_proposes_a_drop_in_when_systemd_would_run_the_migration():
    from types import SimpleNamespace

    from orchestrator.errors import Completed
    from orchestrator.host.runner import FakeRunner
    from orchestrator.steps.kind import StepKind
    from orchestrator.steps.migration import start_timeout_warning

    argv = ("systemctl", "show", "-p", "TimeoutStartUSec", "--value", "orthanc")
    host = SimpleNamespace(service=SimpleNamespace(kind="systemd"),
                           runner=FakeRunner({argv: Completed(argv, 0, "10min\n", "")}))

    def ctx(*kinds: StepKind) -> SimpleNamespace:
        return SimpleNamespace(steps=[SimpleNamespace(kind=k) for k in kinds],
                               plan=SimpleNamespace(service=SimpleNamespace(name="orthanc")))

    [warning] = start_timeout_warning(host, ctx(StepKind.STOP_SERVICE, StepKind.START_SERVICE))
    assert "after 600s" in warning and "TimeoutStartSec=86400" in warning
    # With an upgrade step the migration runs outside the unit, under the tool's watchdog.
    assert start_timeout_warning(host, ctx(StepKind.UPGRADE, StepKind.START_SERVICE)) == []
    host.service.kind = "process"
    assert start_timeout_warning(host, ctx(StepKind.START_SERVICE)) == []
