"""The JsonCpp-compatible parser: what it accepts, where it says things go wrong."""

from __future__ import annotations

import pytest

from orchestrator.orthanc import jsonc


def parse(text: str):
    return jsonc.parse(text).value


@pytest.mark.parametrize("text, value", [
    ('{"a": "http://x//y"}', {"a": "http://x//y"}),
    ('{"a": "/* no */"} // yes', {"a": "/* no */"}),
    ('{ /* c */ "a" : /* c */ 1 /* c */ , /* c */ }', {"a": 1}),
    ('{"a": [1, 2, ], }', {"a": [1, 2]}),
    ('{"a": [ ]}', {"a": []}),
    ('{"a": [ /* c */ 1 ]}', {"a": [1]}),
    ('{"a": [1 /* c */ , 2 // c\n ]}', {"a": [1, 2]}),
    ('{"a": 007, "b": 1., "c": -, "d": -0.5e+2, "e": 1E2}',
     {"a": 7, "b": 1.0, "c": 0, "d": -50.0, "e": 100.0}),
    ('{"a": 18446744073709551615, "b": 18446744073709551616}',
     {"a": 18446744073709551615, "b": 1.8446744073709552e19}),
    ('{"a": "\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00"}', {"a": "\"\\/\b\f\n\r\té😀"}),
    ('{"a": "raw\ttab and\nnewline"}', {"a": "raw\ttab and\nnewline"}),
    ('{"a": true, "b": false, "c": null}', {"a": True, "b": False, "c": None}),
    ('{"a": 1}\n{"b": 2}', {"a": 1}),
    ('{"a": 1} /* unterminated', {"a": 1}),
    ("\t\r\n{}\r\n", {}),
])
def test_accepted(text, value):
    assert parse(text) == value


@pytest.mark.parametrize("text, offset, words", [
    ('', 0, "empty"),
    ('// only\n/* comments */', 22, "empty"),
    ('{"a": [ // c\n ]}', 8, "comment right before the ']'"),
    ('{"a": [1, /* c */ ]}', 10, "comment right before the ']'"),
    ('{"a" /* c */ : 1}', 5, "between \"a\" and its ':'"),
    ('{"a": 1 /* /* */ */ }', 17, "expected ',' or '}'"),
    ('{"a": 1,, }', 8, "member name"),
    ('{,}', 1, "member name"),
    ('{"a": [1,,2]}', 9, "expected a value"),
    ('{"a": "x}', 6, "unterminated string"),
    ('{"a": 1 /* x }', 8, "unterminated /* comment"),
    ('{"a": 1 / }', 8, "lone '/'"),
    ('{"a": NaN}', 6, "unexpected character 'N'"),
    ('{"a": Infinity}', 6, "unexpected character 'I'"),
    ('{"a": 1e999}', 6, "out of range"),
    ('{"a": 1e}', 6, "is not a number"),
    ('{"a": "\\x"}', 7, "bad escape"),
    ('{"a": "\\u12"}', 7, "four hexadecimal digits"),
    ('{"a": "\\ud800"}', 7, "surrogate pair"),
    ('{"a": "\\udc00"}', 7, "half of a surrogate pair"),
    ("{'a': 1}", 1, "member name"),
    ('{"a": 1\f}', 7, "expected ',' or '}'"),
    ('{"a": 1', 7, "missing '}'"),
    ('{"a": [1', 8, "missing ']'"),
    ('{"a":', 5, "unexpected end of file"),
    ('{"a": "caf\udce9"}', 10, "byte 0xE9 is not UTF-8"),
    ('\udcff\udcfe{}', 0, "byte 0xFF is not UTF-8"),
])
def test_refused_with_a_position(text, offset, words):
    with pytest.raises(jsonc.JsonSyntaxError) as info:
        jsonc.parse(text)
    assert words in info.value.message
    assert info.value.offset == offset


def test_deliberate_refusals_are_flagged():
    for text in ('{"a": "caf\udce9"}', '{"a": "\\udc00"}'):
        with pytest.raises(jsonc.JsonSyntaxError) as info:
            jsonc.parse(text)
        assert info.value.orthanc_accepts
    with pytest.raises(jsonc.JsonSyntaxError) as info:
        jsonc.parse('{"a": "\\x"}')
    assert not info.value.orthanc_accepts


def test_non_utf8_bytes_in_comments_are_fine():
    assert parse('{ // caf\udce9\n "a": 1 }') == {"a": 1}


def test_depth_limit_is_jsoncpp_stack_limit():
    value = parse("[" * 1000 + "]" * 1000)
    for _ in range(999):
        (value,) = value
    assert value == []
    with pytest.raises(jsonc.JsonSyntaxError, match="deeper than 1000"):
        jsonc.parse("[" * 1001 + "]" * 1001)
    with pytest.raises(jsonc.JsonSyntaxError):  # deep and unterminated: no RecursionError
        jsonc.parse("[" * 100000)


def test_members_duplicates_comments_and_trailing_text():
    text = '{\n "a": "x", // c\n "b": {"k": 1, "k": 2},\n "a": [1]\n} tail'
    doc = jsonc.parse(text)
    assert [(m.key, text[m.value_start:m.value_end], m.is_string) for m in doc.members] == [
        ("a", '"x"', True), ("b", '{"k": 1, "k": 2}', False), ("a", "[1]", False)]
    assert [(d.path, d.key) for d in doc.duplicates] == [(("b",), "k"), ((), "a")]
    assert doc.value == {"a": [1], "b": {"k": 2}}
    assert [text[s:e] for s, e in doc.comments] == ["// c"]
    assert text[doc.trailing:] == "tail"
    assert doc.start == 0


def test_line_col_counts_crlf_and_cr_once():
    text = "a\r\nb\rc\nd"
    assert jsonc.line_col(text, 0) == (1, 1)
    assert jsonc.line_col(text, text.index("b")) == (2, 1)
    assert jsonc.line_col(text, text.index("c")) == (3, 1)
    assert jsonc.line_col(text, text.index("d")) == (4, 1)
    assert jsonc.line_col("xyz", 2) == (1, 3)


def test_the_debian_configuration_parses_like_json_without_comments():
    import json
    import re
    from pathlib import Path
    path = Path("/etc/orthanc/orthanc.json")
    if not path.exists():
        pytest.skip("no Debian Orthanc configuration here")
    text = path.read_text()
    doc = jsonc.parse(text)
    assert doc.value["StorageDirectory"] == "/var/lib/orthanc/db-v6"
    stripped = list(text)
    for start, end in doc.comments:
        stripped[start:end] = " " * (end - start)
    plain = re.sub(r",(\s*[}\]])", r"\1", "".join(stripped))
    assert json.loads(plain) == doc.value
