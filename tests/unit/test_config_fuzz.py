"""Fuzz the configuration reader and the rewriter: only InputError (or success) ever comes out."""

from __future__ import annotations

import json
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import InputError
from orchestrator.orthanc.config import load_config
from orchestrator.orthanc.config_edit import set_string_value

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

# Fragments that exercise the tricky paths far more often than random bytes do.
FRAGMENTS = st.sampled_from([
    "{", "}", "[", "]", ",", ":", '"', "\\", "/", "*", "//", "/*", "*/", "\n", "\r", " ",
    '"StorageDirectory"', '"IndexDirectory"', '"HttpPort"', '"PostgreSQL"', '"EnableIndex"',
    '"RegisteredUsers"', '"Plugins"', "${", "}", ":-", "${X}", "${:-}", "true", "false", "null",
    "0", "-", "1e999", ".5", "\\u", "\\ud800", "\ufeff", "\udce9", "\x00", "http://a//b",
])
JSONISH = st.lists(st.one_of(FRAGMENTS, st.text(max_size=4)), max_size=40).map("".join)
ENV = {"X": "1", "PORT": "8042", "Q": '"'}


def _load(tmp_path, data: bytes) -> None:
    path = tmp_path / "orthanc.json"
    path.write_bytes(data)
    try:
        config = load_config(path, ENV)
    except InputError as exc:
        assert exc.message and "\n" not in exc.message.replace(str(path), "")
        return
    json.dumps(config.to_dict())  # the facts always serialise


@SETTINGS
@given(data=st.binary(max_size=200))
def test_random_bytes(tmp_path, data):
    _load(tmp_path, data)


@SETTINGS
@given(text=JSONISH)
def test_jsonish_text(tmp_path, text):
    _load(tmp_path, text.encode("utf-8", "surrogateescape"))


@SETTINGS
@given(text=JSONISH)
def test_jsonish_text_inside_an_object(tmp_path, text):
    _load(tmp_path, ('{ "StorageDirectory": "/s", ' + text + " }").encode("utf-8",
                                                                          "surrogateescape"))


VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.text(max_size=10)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=10)
KEYS = st.sampled_from(["StorageDirectory", "IndexDirectory", "HttpPort", "SslEnabled",
                        "RegisteredUsers", "Plugins", "MaximumStorageSize", "PostgreSQL",
                        "MySQL", "AwsS3Storage", "StorageCompression", "Name"])


@SETTINGS
@given(config=st.dictionaries(KEYS, VALUES, max_size=6))
def test_well_formed_json_with_wrong_types(tmp_path, config):
    _load(tmp_path, json.dumps(config).encode())


@SETTINGS
@given(text=JSONISH, key=st.sampled_from(["StorageDirectory", "IndexDirectory", "X"]),
       value=st.text(alphabet=string.printable, max_size=20))
def test_set_string_value_on_anything(text, key, value):
    for candidate in (text, '{ "StorageDirectory": "/a", ' + text + " }"):
        try:
            out = set_string_value(candidate, key, value)
        except InputError:
            continue
        # Success means the rest is intact: the text before the value is unchanged.
        assert out != candidate or json.dumps(value, ensure_ascii=False) in candidate
