"""Nothing gone under live traffic: counts may grow, never shrink; listed IDs a superset."""

from __future__ import annotations

import pytest

from orchestrator.errors import StepError
from orchestrator.steps.healthy import kept

BEFORE = {"patients": 2, "studies": 2, "series": 3, "instances": 9}


def test_growth_is_welcome_and_said():
    grown = dict(BEFORE, instances=12, series=4)
    assert kept(BEFORE, grown, {"a", "b"}, {"a", "b", "c"}) == \
        "3 instances more than before (stored meanwhile)"
    assert kept(BEFORE, dict(BEFORE), {"a"}, {"a"}) == ""
    assert kept(None, None, None, None) == ""


def test_a_count_that_shrank_fails_naming_it():
    with pytest.raises(StepError, match="instances shrank"):
        kept(BEFORE, dict(BEFORE, instances=8), None, None)


def test_an_instance_listed_before_and_missing_now_fails_even_when_counts_grew():
    with pytest.raises(StepError, match="1 of the 2 instances listed before the stop are missing"):
        kept(BEFORE, dict(BEFORE, instances=20), {"a", "b"}, {"a", "c", "d"})


class _Answer:
    def __init__(self, data=None, content=b""):
        self._data, self.content = data, content

    def json(self):
        return self._data


class FakeClient:
    """An Orthanc REST client keyed by (method, path): an answer, or an error to raise."""

    base_url = "http://127.0.0.1:8042"

    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def request(self, method, path, **kw):
        self.calls.append((method, path))
        found = self.answers.get((method, path.split("?")[0]))
        if isinstance(found, Exception):
            raise found
        return found or _Answer([])

    def close(self):
        pass


def _host(client):
    from types import SimpleNamespace
    return SimpleNamespace(orthanc=lambda: client)


def test_the_store_probe_stores_reads_back_and_deletes_under_the_reserved_patient():
    from orchestrator.steps.healthy import PROBE_PATIENT, probe_store

    dicom = b"\0" * 128 + b"DICM" + b"\0" * 16
    client = FakeClient({("POST", "/tools/find"): _Answer(["left-1"]),
                         ("POST", "/tools/create-dicom"): _Answer({"ID": "p1"}),
                         ("GET", "/instances/p1/file"): _Answer(content=dicom)})
    assert "deleted instance p1" in probe_store(_host(client))
    assert client.calls == [("POST", "/tools/find"), ("DELETE", "/instances/left-1"),
                            ("POST", "/tools/create-dicom"), ("GET", "/instances/p1/file"),
                            ("DELETE", "/instances/p1")]
    assert PROBE_PATIENT == "ORCHESTRATOR-STORE-PROBE"


def test_a_store_that_fails_with_500_fails_the_probe_with_a_hint():
    from orchestrator.errors import OrthancHttpError
    from orchestrator.steps.healthy import probe_store

    client = FakeClient({("POST", "/tools/create-dicom"):
                         OrthancHttpError("POST /tools/create-dicom: HTTP 500", status=500)})
    with pytest.raises(StepError, match="the store probe failed: .*HTTP 500") as caught:
        probe_store(_host(client))
    assert "newer Orthanc" in caught.value.hint
