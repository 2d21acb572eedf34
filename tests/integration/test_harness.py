"""The harness itself against the real Orthanc: start, load, stop, schema-5 helper."""

import sqlite3

import pytest

from tests.harness.orthanc import make_schema5_index

pytestmark = pytest.mark.orthanc


def test_module_orthanc_has_the_dataset(module_orthanc, small_dataset):
    stats = module_orthanc.statistics()
    assert stats["CountInstances"] == len(small_dataset)
    assert stats["CountPatients"] == 2
    assert module_orthanc.get("/system")["DatabaseVersion"] == 6


def test_schema5_helper(tmp_path, small_dataset):
    server = make_schema5_index(tmp_path / "o", small_dataset[:4])
    con = sqlite3.connect(f"file:{server.index_path}?mode=ro", uri=True)
    try:
        assert con.execute("SELECT value FROM GlobalProperties WHERE property=1").fetchone()[0] == "5"
    finally:
        con.close()
    assert server.proc is None
