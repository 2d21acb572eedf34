"""A dry run of `replicate` / `import-storage` never writes: real Orthanc 1.10.1 targets,
counted before and after, and a target behind a gate that refuses (and records) any write."""

from __future__ import annotations

import pytest

from orchestrator.replication.options import Options
from orchestrator.replication.outcome import CopyOutcome
from orchestrator.replication.pool import RetryPolicy
from orchestrator.replication.replicate import Replication
from orchestrator.replication.state import StateStore
from orchestrator.replication.transport import Endpoint
from orchestrator.replication.writes import Write, Writes
from tests.harness.dicom import make_dataset
from tests.harness.orthanc import OrthancServer
from tests.harness.replication import ReadOnlyGate, count, parse_json, run_cli

pytestmark = pytest.mark.orthanc

COUNT = 40
HELD = 15  # of them already on the target


@pytest.fixture
def pair(orthanc_factory):
    data = make_dataset(COUNT, rows=8, cols=8, seed="dry")
    source = orthanc_factory()
    source.upload(data)
    target = orthanc_factory()
    target.upload(data[:HELD])
    gate = ReadOnlyGate(target.port)
    yield source, target, gate
    gate.close()


def test_dry_replicate_writes_nothing_and_counts_right(pair, tmp_path):
    source, target, gate = pair
    before = target.statistics()
    src, tgt = Endpoint(source.url), Endpoint(gate.url)
    store = StateStore(tmp_path / "state", "replicate", src.base_url, tgt.base_url)
    writes = Writes(dry=True)
    summary = Replication(src, tgt, store, Options(workers=4, verify=True), writes).run()
    assert gate.writes == [] and gate.reads > 0  # it read the target, never wrote to it
    assert target.statistics() == before
    assert not (tmp_path / "state").exists()  # no resume state either
    assert summary.ok and summary.dry and summary.verify is None
    assert summary.count(CopyOutcome.WOULD_COPY) == COUNT - HELD
    assert summary.count(CopyOutcome.PRESENT) == HELD and summary.count(CopyOutcome.COPIED) == 0
    assert writes.counts[Write.SEND] == COUNT - HELD and writes.counts[Write.SAVE_STATE] >= 1
    assert writes.counts[Write.VERIFY] == 1


def test_the_same_run_for_real_would_have_written_through_the_gate(pair, tmp_path):
    source, target, gate = pair
    src, tgt = Endpoint(source.url), Endpoint(gate.url)
    store = StateStore(tmp_path, "replicate", src.base_url, tgt.base_url)
    quick = Options(workers=2, policy=RetryPolicy(attempts=1))
    summary = Replication(src, tgt, store, quick, Writes()).run()
    # The gate does see writes, so the dry test above means something. Every POST failed with
    # a transient 500, so the breaker stopped the run after a streak of them.
    assert gate.writes and all(method == "POST" for method, _ in gate.writes)
    assert 0 < summary.count(CopyOutcome.FAILED) <= len(gate.writes) and summary.aborted
    assert all(f["reason"].startswith("target refused the file: HTTP 500")
               for f in summary.failures)


def test_dry_cli_runs_of_both_commands_write_nothing(pair, tmp_path):
    source, target, gate = pair
    before = count(target)
    dry = run_cli("replicate", source.url, gate.url, "--state-dir", str(tmp_path / "s1"),
                  "--dry-run", "--json", "--verify")
    assert dry.returncode == 0, dry.stderr
    data = parse_json(dry.stdout)
    assert data["dry_run"] and data["counts"]["would_copy"] == COUNT - HELD
    assert data["counts"]["already_present"] == HELD
    source.stop()  # a stopped source: its storage folder and index
    for extra in ((), ("--no-index",)):
        imp = run_cli("import-storage", str(source.storage), gate.url, "--state-dir",
                      str(tmp_path / "s2"), "--dry-run", "--json", "--verify", *extra)
        assert imp.returncode == 0, imp.stderr
        counts = parse_json(imp.stdout)["counts"]
        assert counts["copied"] == 0 and counts["would_copy"] + counts["already_present"] == COUNT
    assert gate.writes == [] and count(target) == before
    assert not (tmp_path / "s1").exists() and not (tmp_path / "s2").exists()
