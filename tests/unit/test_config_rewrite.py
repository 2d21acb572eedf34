"""set_string_value / set_int_value: change one top-level value, keep every other byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import InputError
from orchestrator.orthanc.config import load_config
from orchestrator.orthanc.config_edit import set_int_value, set_string_value

TEXT = """\ufeff{
  // "StorageDirectory": "/in/a/comment",
  "Name": "StorageDirectory",           /* a value, not a key */
  "Sub": { "StorageDirectory": "/nested" },
  "StorageDirectory" : "/var/lib/orthanc/db-v5",   // old one
  "IndexDirectory": "${INDEX:-/var/lib/orthanc/db-v5}",
  "HttpPort": ${PORT},
  "Plugins": [ "/usr/share/orthanc/plugins", ],
  "StorageDirectory" : "/var/lib/orthanc/db-v5-again",
}
"""


def test_replaces_the_last_top_level_value_only():
    out = set_string_value(TEXT, "StorageDirectory", "/var/lib/orthanc/db-v6")
    assert out == TEXT.replace('"/var/lib/orthanc/db-v5-again"', '"/var/lib/orthanc/db-v6"')


def test_a_value_written_with_a_variable_is_replaced_whole():
    out = set_string_value(TEXT, "IndexDirectory", "/new/index")
    assert out == TEXT.replace('"${INDEX:-/var/lib/orthanc/db-v5}"', '"/new/index"')


def test_the_new_value_is_json_escaped_and_reads_back(tmp_path):
    value = 'C:\\Orthanc "data" \u00e9\n'
    out = set_string_value(TEXT, "StorageDirectory", value)
    path = tmp_path / "orthanc.json"
    path.write_text(out)
    config = load_config(path, {"PORT": "8042"})
    assert config.values["StorageDirectory"] == value
    assert config.values["Sub"] == {"StorageDirectory": "/nested"}


def test_crlf_and_non_utf8_comments_survive():
    raw = b'{\r\n  // caf\xe9\r\n  "StorageDirectory": "/a",\r\n}\r\n'
    text = raw.decode("utf-8", "surrogateescape")
    out = set_string_value(text, "StorageDirectory", "/b")
    assert out.encode("utf-8", "surrogateescape") == raw.replace(b'"/a"', b'"/b"')


@pytest.mark.parametrize("key, words", [
    ("Missing", "not set at the top level"),
    ("HttpPort", "not a string literal"),
    ("Plugins", "not a string literal"),
])
def test_refusals(key, words):
    with pytest.raises(InputError, match=words):
        set_string_value(TEXT, key, "/x")


def test_unparseable_text_and_bad_values_are_refused():
    with pytest.raises(InputError, match="does not parse at line 1"):
        set_string_value('{ "StorageDirectory": "/a" ,, }', "StorageDirectory", "/b")
    with pytest.raises(InputError, match="NUL"):
        set_string_value('{ "StorageDirectory": "/a" }', "StorageDirectory", "/b\x00")
    with pytest.raises(InputError):
        set_string_value('[ "StorageDirectory" ]', "StorageDirectory", "/b")


def test_the_debian_configuration_round_trips():
    path = Path("/etc/orthanc/orthanc.json")
    if not path.exists():
        pytest.skip("no Debian Orthanc configuration here")
    text = path.read_text(encoding="utf-8", errors="surrogateescape")
    out = set_string_value(text, "IndexDirectory", "/var/lib/orthanc/db-v7")
    assert len(out) == len(text) and out.count("\n") == text.count("\n")
    diff = [(a, b) for a, b in zip(text.splitlines(), out.splitlines()) if a != b]
    assert diff == [('  "IndexDirectory" : "/var/lib/orthanc/db-v6",',
                     '  "IndexDirectory" : "/var/lib/orthanc/db-v7",')]


PORTS = """{
  // "HttpPort": 1, in a comment
  "Sub": { "HttpPort": 2 },
  "HttpPort" : 8043,   /* ours */
  "DicomPort": "4243",
}
"""


def test_an_integer_is_replaced_in_place(tmp_path):
    out = set_int_value(PORTS, "HttpPort", 8042)
    assert out == PORTS.replace("8043", "8042")
    (tmp_path / "c.json").write_text(out)
    assert load_config(tmp_path / "c.json").http_port == 8042


def test_an_unset_integer_is_added_after_the_brace(tmp_path):
    out = set_int_value(PORTS, "DicomAet", 5)
    assert out.startswith('{\n  "DicomAet": 5,\n  // "HttpPort"')
    assert set_int_value("{ }", "DicomPort", 4242) == '{\n  "DicomPort": 4242 }'
    (tmp_path / "c.json").write_text(set_int_value(PORTS.replace('"4243"', "4243"),
                                                   "DicomPort", 104))
    assert load_config(tmp_path / "c.json").dicom_port == 104


def test_a_non_integer_literal_is_refused():
    with pytest.raises(InputError, match=r"DicomPort.*line 5, column 16.*not an integer"):
        set_int_value(PORTS, "DicomPort", 4242)
    with pytest.raises(InputError, match="not an integer"):
        set_int_value('{"HttpPort": ${PORT}}', "HttpPort", 8042)
