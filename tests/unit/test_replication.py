"""Replication pieces with fakes keyed by data: retries, watermark, state, listing, presence,
summary, verify verdicts, rendering and the progress bar."""

from __future__ import annotations

import io
import json
import os

import pytest

from orchestrator.errors import ExitCode, OrthancHttpError
from orchestrator.host.clock import FakeClock
from orchestrator.progress import Progress, format_duration, render
from orchestrator.replication import listing
from orchestrator.replication.options import PresenceMode
from orchestrator.replication.outcome import CopyOutcome, Result, Summary
from orchestrator.replication.pool import (Checkpoint, RetryPolicy, TransferPool, Unreachable,
                                           Work, with_retries)
from orchestrator.replication.state import MAX_FAILURES, StateStore, Watermark
from orchestrator.replication.target import PRESENCE_PATIENCE, Presence, store
from orchestrator.replication.transport import Answer
from orchestrator.replication.verify import compare
from orchestrator.report.transfer import document, render_text

FAST = RetryPolicy(attempts=3, base_delay=0.0)
ID1 = "a6b3ca9c-d284f182-b64311a4-8848dfa5-2a09d0c3"
ID2 = "6833d278-4616d97a-1faac514-74fc3109-66df0e30"


class FakeEndpoint:
    """Answers keyed by (method, path): an Answer, an exception, or a list consumed in order."""

    base_url = "http://fake:8042"

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def request(self, method, path, body=None, content_type=None):
        self.calls.append((method, path))
        answer = self.answers[(method, path)]
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def get(self, path):
        return self.request("GET", path)

    def post(self, path, body, content_type="application/dicom"):
        return self.request("POST", path, body)


def js(doc, status=200):
    return Answer(status, json.dumps(doc).encode())


DOWN = OrthancHttpError("GET http://fake:8042/x: cannot connect", transient=True)


# -- retries -----------------------------------------------------------------------------

class RecordingClock(FakeClock):
    def __init__(self):
        super().__init__()
        self.sleeps = []

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        super().sleep(seconds)


class NoSleep(FakeClock):
    def sleep(self, seconds):
        raise AssertionError("slept")


def test_retries_ride_over_connection_errors_and_5xx():
    clock = RecordingClock()
    calls = iter([DOWN, Answer(503, b""), Answer(200, b"ok")])

    def call():
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item
    slow = RetryPolicy(attempts=3, base_delay=0.5)
    assert with_retries(call, slow, clock).data == b"ok"
    assert clock.sleeps == [0.5, 1.0] and clock.now() == 1001.5  # the Clock port, not time.*


def test_retries_give_up_with_the_last_answer_or_unreachable():
    assert with_retries(lambda: Answer(500, b"x"), FAST, FakeClock()).status == 500
    with pytest.raises(Unreachable):
        with_retries(lambda: (_ for _ in ()).throw(DOWN), FAST, FakeClock())
    assert with_retries(lambda: Answer(404, b""), FAST, NoSleep()).status == 404  # no retry


def test_backoff_doubles_up_to_a_ceiling():
    policy = RetryPolicy(attempts=8, base_delay=0.5, max_delay=8.0)
    assert [policy.delay(n) for n in range(6)] == [0.5, 1, 2, 4, 8, 8]


# -- watermark and state -----------------------------------------------------------------

def test_watermark_moves_only_past_a_finished_prefix():
    mark = Watermark(cursor=10, weight=5)
    tokens = [mark.add(key, 1) for key in (11, 12, 13)]
    mark.finish(tokens[1])
    assert (mark.cursor, mark.weight) == (10, 5)
    mark.finish(tokens[0])
    assert (mark.cursor, mark.weight) == (12, 7)
    mark.finish(tokens[2])
    assert (mark.cursor, mark.weight, mark.in_flight) == (13, 8, 0)


def test_state_round_trip_is_keyed_by_the_pair(tmp_path):
    store_ = StateStore(tmp_path, "replicate", "http://a:1", "http://b:2")
    state = store_.load()
    assert state.cursor is None
    state.cursor, state.listed = 42, 40
    state.record_failure(ID1, "HTTP 500")
    store_.save(state)
    again = store_.load()
    assert (again.cursor, again.listed, again.failures) == (42, 40, {ID1: "HTTP 500"})
    assert StateStore(tmp_path, "replicate", "http://a:1", "http://c:3").load().cursor is None
    store_.path.write_text("{torn")
    assert store_.load().cursor is None  # a torn file means a full (safe) pass
    assert [p.name for p in tmp_path.iterdir()] == [store_.path.name]  # no temp files left


def test_state_caps_the_failures_it_keeps(tmp_path):
    state = StateStore(tmp_path, "replicate", "a", "b").fresh()
    for n in range(MAX_FAILURES + 3):
        state.record_failure(str(n), "x")
    assert (len(state.failures), state.failures_dropped) == (MAX_FAILURES, 3)


def test_state_file_never_holds_a_password(tmp_path):
    store_ = StateStore(tmp_path, "replicate", "http://a:1", "http://b:2")
    store_.save(store_.fresh())
    assert "s3cret" not in store_.path.read_text()
    assert oct(os.stat(tmp_path).st_mode & 0o777)


# -- listing ------------------------------------------------------------------------------

def test_changes_are_paged_and_only_new_instances_are_work():
    fake = FakeEndpoint({
        ("GET", "/changes?since=0&limit=2"): js({"Changes": [
            {"Seq": 1, "ChangeType": "NewInstance", "ID": ID1},
            {"Seq": 2, "ChangeType": "NewSeries", "ID": ID2}], "Done": False, "Last": 2}),
        ("GET", "/changes?since=2&limit=2"): js({"Changes": [
            {"Seq": 5, "ChangeType": "NewInstance", "ID": "../../tools/reset"},
            {"Seq": 6, "ChangeType": "NewInstance", "ID": ID2}], "Done": True, "Last": 6}),
    })
    got = list(listing.changes(fake, 0, FAST, page=2))
    assert got == [Work(1, ID1), Checkpoint(2), Checkpoint(5), Work(6, ID2)]


@pytest.mark.parametrize("doc", [[], {"Changes": "x", "Done": True, "Last": 1},
                                 {"Changes": [{"Seq": 0}], "Done": True, "Last": 0}])
def test_changes_refuse_a_document_that_is_not_one(doc):
    fake = FakeEndpoint({("GET", "/changes?since=0&limit=1000"): js(doc)})
    with pytest.raises(OrthancHttpError, match="not a changes document|bad Seq"):
        list(listing.changes(fake, 0, FAST))


def test_instances_pages_are_offsets_and_ids_are_checked():
    fake = FakeEndpoint({("GET", "/instances?since=0&limit=2"): js([ID1, ID2]),
                         ("GET", "/instances?since=2&limit=2"): js([ID1])})
    assert list(listing.instances(fake, FAST, page=2)) == [Work(1, ID1), Work(2, ID2), Work(3, ID1)]
    bad = FakeEndpoint({("GET", "/instances?since=0&limit=1000"): js(["../x"])})
    with pytest.raises(OrthancHttpError, match="not an instance ID"):
        list(listing.instances(bad, FAST))


def test_a_401_names_the_url_and_hints_at_credentials():
    fake = FakeEndpoint({("GET", "/system"): Answer(401, b"")})
    with pytest.raises(OrthancHttpError) as info:
        listing.get_json(fake, "/system", FAST)
    assert "HTTP 401" in info.value.message and "credentials" in info.value.hint


# -- target answers -------------------------------------------------------------------------

@pytest.mark.parametrize("answer, outcome, reason", [
    (js({"Status": "Success", "ID": ID1}), CopyOutcome.COPIED, ""),
    (js({"Status": "AlreadyStored", "ID": ID1}), CopyOutcome.PRESENT, ""),
    (js({"Status": "Success", "ID": ID2}), CopyOutcome.FAILED, "holds instance"),
    (js({"Status": "FilteredOut", "ID": ID1}), CopyOutcome.FAILED, "Status FilteredOut"),
    (js({"Message": "Bad file format", "OrthancStatus": 15}, 400), CopyOutcome.FAILED,
     "HTTP 400 (Bad file format)"),
    (Answer(200, b"<html>"), CopyOutcome.FAILED, "not an Orthanc store answer"),
])
def test_store_interprets_every_answer(answer, outcome, reason):
    stored = store(FakeEndpoint({("POST", "/instances"): answer}), b"DICM", ID1, FAST)
    assert stored.outcome is outcome and reason in stored.reason


@pytest.mark.parametrize("status, transient", [(500, True), (503, True), (429, True),
                                                (408, True), (400, False), (401, False),
                                                (404, False), (None, False)])
def test_a_failure_carries_its_http_status_and_transience_is_read_from_it(status, transient):
    result = Result(CopyOutcome.FAILED, ID1, "any wording at all", status=status)
    assert result.status == status and result.transient is transient
    assert not Result(CopyOutcome.COPIED, ID1, status=500).transient


def test_a_refused_store_keeps_the_status():
    answer = js({"Message": "Internal error"}, 503)
    stored = store(FakeEndpoint({("POST", "/instances"): answer}), b"DICM", ID1,
                   RetryPolicy(attempts=1))
    assert stored.outcome is CopyOutcome.FAILED and stored.status == 503


def test_presence_auto_stops_asking_an_empty_target_and_resumes_on_a_hit():
    presence = Presence(PresenceMode.AUTO)
    for _ in range(PRESENCE_PATIENCE):
        assert presence.should_ask()
        presence.record(False)
    assert not presence.should_ask()
    presence.record(True)
    assert presence.should_ask()
    assert Presence(PresenceMode.ALWAYS).should_ask()
    assert not Presence(PresenceMode.NEVER).should_ask()


# -- pool ------------------------------------------------------------------------------------

def test_pool_stops_on_unreachable_and_keeps_the_cursor_before_it():
    results, saved = [], []

    def work(item):
        if item == "dead":
            raise Unreachable(DOWN)
        return Result(CopyOutcome.COPIED, item)
    mark = Watermark(0)
    pool = TransferPool(1, on_result=results.append, save=lambda w: saved.append(w.cursor))
    reason = pool.run([Work(1, "a"), Work(2, "dead"), Work(3, "b")], work, mark)
    assert "cannot connect" in reason
    assert mark.cursor == 1 and saved[-1] == 1


def test_pool_breaker_stops_a_streak_of_transient_failures():
    pool = TransferPool(1, on_result=lambda r: None, save=lambda w: None, breaker=3)
    reason = pool.run((Work(n, n) for n in range(1, 100)),
                      lambda n: Result(CopyOutcome.FAILED, str(n), "oops", status=500),
                      Watermark(0))
    assert reason.startswith("stopped after 3 instances in a row failed")


# -- summary, verify, rendering ---------------------------------------------------------------

def test_summary_exit_code_and_json():
    s = Summary("replicate", "http://a", "http://b")
    s.add(Result(CopyOutcome.COPIED, ID1, size=10))
    s.add(Result(CopyOutcome.SKIPPED, "x", "not DICOM"))
    assert s.exit_code is ExitCode.OK
    s.add(Result(CopyOutcome.FAILED, ID2, "HTTP 500"))
    data = document(s)
    assert data["exit_code"] == 1 and not data["ok"]
    assert data["counts"]["copied"] == 1 and data["skipped"] == {"not DICOM": 1}
    assert data["failures"] == [{"item": ID2, "reason": "HTTP 500"}]
    text = render_text(data)
    assert "failed: " + ID2 in text and "NOT complete" in text


@pytest.mark.parametrize("args, outcome, reason", [
    (("m", "stored", "m", "stored"), CopyOutcome.PRESENT, ""),
    (("m", "hashed", "m", "stored"), CopyOutcome.PRESENT, "source"),
    (("m", "stored", None, "missing"), CopyOutcome.FAILED, "missing"),
    (("m", "stored", "n", "stored"), CopyOutcome.FAILED, "different"),
    ((None, "missing", None, ""), CopyOutcome.SKIPPED, "gone"),
])
def test_verify_verdicts(args, outcome, reason):
    result = compare(ID1, *args)
    assert result.outcome is outcome and result.reason.startswith(reason)


def test_progress_renders_rate_and_eta_and_stays_quiet_off_a_tty():
    assert render("copy", 50, 200, 10.0) == \
        "copy  [######..................] 50/200  25%  10/s  ETA 0:15"
    assert render("copy", 7, None, None) == "copy  7"
    assert format_duration(3725) == "1:02:05"
    quiet = io.StringIO()
    Progress("x", stream=quiet).update(1, 2)
    assert quiet.getvalue() == ""
    now = [0.0]
    tty = io.StringIO()
    bar = Progress("x", stream=tty, enabled=True, clock=lambda: now[0])
    bar.update(0, 10)
    now[0] = 1.0
    bar.update(5, 10)
    bar.close()
    assert "5/10" in tty.getvalue() and "5/s" in tty.getvalue()


def test_recycling_limits_are_read_from_the_target_config(tmp_path):
    from orchestrator.replication.target import limit_warnings

    config = tmp_path / "orthanc.json"
    config.write_text('{ // a comment, as Orthanc allows\n "MaximumPatientCount": 100,\n'
                      ' "MaximumStorageSize": 0 }')
    warnings = limit_warnings(config)
    assert len(warnings) == 1 and "MaximumPatientCount 100" in warnings[0]
    config.write_text("{}")
    assert limit_warnings(config) == []
    assert "--target-config" in limit_warnings(None)[0]


# -- the one dry-run seam --------------------------------------------------------------------

def test_writes_act_or_only_count_and_a_dry_run_never_calls_the_action():
    from orchestrator.replication.writes import Write, Writes

    real, dry = Writes(), Writes(dry=True)
    assert real.apply(Write.SEND, lambda: "sent", "would") == "sent"
    assert dry.apply(Write.SEND, lambda: 1 / 0, "would") == "would"
    assert dry.check(lambda: 1 / 0, None) is None
    assert dict(dry.counts) == {Write.SEND: 1, Write.VERIFY: 1}
    assert real.learns_from_sends() and not dry.learns_from_sends()


def test_no_module_of_replication_decides_the_dry_run_itself():
    from pathlib import Path

    import orchestrator.replication as pkg

    for path in Path(pkg.__file__).parent.glob("*.py"):
        assert "dry_run" not in path.read_text(), path.name
