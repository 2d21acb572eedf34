"""The Orthanc configuration reader: torture inputs, folders, variables, typed facts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.errors import ExitCode, InputError
from orchestrator.orthanc.config import ConfigSyntaxError, load_config

DATA = Path(__file__).parent.parent / "data" / "config"
TORTURE = json.loads((DATA / "torture.json").read_text())
ENV = {"ORCH_TEST_STORAGE": "/srv/orthanc-test", "ORCH_TEST_PORT": "8042"}


def _snapshot(root: Path) -> dict:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.mark.parametrize("name", sorted(TORTURE))
def test_torture_case(name):
    case = TORTURE[name]
    path = DATA / "torture" / name
    if case["ours"] == "refuses":
        with pytest.raises(InputError) as info:
            load_config(path, ENV)
        assert str(path) in info.value.message
        assert info.value.exit_code == ExitCode.BAD_INPUT
        assert info.value.hint
        assert "\n" not in info.value.message
        if "line" in case:
            assert isinstance(info.value, ConfigSyntaxError)
            assert (info.value.line, info.value.column) == (case["line"], case["column"])
            assert info.value.message.startswith(
                f"{path}, line {case['line']}, column {case['column']}: ")
        return
    config = load_config(path, ENV)
    warnings = " | ".join(config.warnings)
    if "warning" in case:
        assert case["warning"] in warnings
    else:
        assert not config.warnings, warnings
    base = path if path.is_dir() else path.parent
    expected = case.get("storage", ENV["ORCH_TEST_STORAGE"]).replace(
        "${ORCH_TEST_STORAGE}", ENV["ORCH_TEST_STORAGE"], 1)
    assert config.storage_dir == base / expected


@pytest.mark.parametrize("name", sorted(TORTURE))
def test_torture_case_through_the_cli(name, tmp_path, capsys, monkeypatch):
    """Every refused case exits 2 with one line naming the place; nothing is ever written."""
    case = TORTURE[name]
    src = DATA / "torture" / name
    work = tmp_path / "work"
    work.mkdir()
    target = work / name
    if src.is_dir():
        shutil.copytree(src, target)
    else:
        shutil.copyfile(src, target)
    storage = tmp_path / "storage"
    before = _snapshot(tmp_path)
    monkeypatch.setenv("ORCH_TEST_STORAGE", str(storage))
    monkeypatch.setenv("ORCH_TEST_PORT", "8042")
    with pytest.raises(SystemExit) as info:
        main(["inspect", str(target)])
    out, err = capsys.readouterr()
    if case["ours"] == "refuses":
        assert info.value.code == ExitCode.BAD_INPUT
        lines = err.strip().splitlines()
        assert lines[0].startswith("orchestrator: error: ") and str(target) in lines[0], err
        assert lines[1].startswith("  hint: ") and len(lines) == 2
        assert "Traceback" not in err and out == ""
    else:
        assert info.value.code == 0, err
        assert out.startswith("Hazards")
    assert _snapshot(tmp_path) == before
    assert not storage.exists()


def test_the_folder_conflict_names_both_files_and_the_key():
    folder = DATA / "torture" / "folder-conflict"
    with pytest.raises(InputError) as info:
        load_config(folder, ENV)
    message = info.value.message
    assert '"Name"' in message
    assert str(folder / "a.json") in message and str(folder / "b.json") in message
    assert "2 different configuration files" in info.value.hint


def test_a_folder_reads_every_json_file_like_orthanc():
    folder = DATA / "torture" / "folder-mixed"
    config = load_config(folder, ENV)
    assert [f.name for f in config.files] == [".hidden.json", "main.JSON"]
    assert config.values["Name"] == "from a hidden file"
    assert config.file_defining("Name") == folder / ".hidden.json"
    assert config.file_defining("StorageDirectory") == folder / "main.JSON"
    assert config.file_defining("HttpPort") is None


def write(tmp_path: Path, text: str | bytes, name: str = "orthanc.json") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


# -- variables -------------------------------------------------------------------------
def test_variables_defaults_and_orthanc_quirks(tmp_path):
    path = write(tmp_path, """{
      "StorageDirectory": "${DATA:-/default/data}",
      "IndexDirectory": "${INDEX:-"/quoted/default"}",
      "Name": "${EMPTY:-not used}",
      "DicomAet": "${UNDEFINED}",
      "HttpPort": ${PORT}
    }""")
    config = load_config(path, {"EMPTY": "", "PORT": "8043"})
    assert config.storage_dir == Path("/default/data")
    assert config.index_dir == Path("/quoted/default")
    assert config.values["Name"] == ""  # defined but empty: Orthanc does not take the default
    assert config.values["DicomAet"] == ""
    assert config.http_port == 8043
    assert len(config.warnings) == 1 and "${UNDEFINED}" in config.warnings[0]
    assert "line 5" in config.warnings[0]


def test_a_variable_may_change_the_syntax_and_errors_point_at_it(tmp_path):
    path = write(tmp_path, '{\n  "Name": "x",\n  "HttpPort": ${PORT}\n}\n')
    with pytest.raises(ConfigSyntaxError) as info:
        load_config(path, {"PORT": "80 80"})
    assert (info.value.line, info.value.column) == (3, 15)  # the ${ in the file
    with pytest.raises(ConfigSyntaxError):
        load_config(path, {"PORT": "\"8042"})


def test_positions_after_a_substitution_map_back_to_the_file(tmp_path):
    path = write(tmp_path, '{ "A": "${LONG}", "B": 1,, }')
    with pytest.raises(ConfigSyntaxError) as info:
        load_config(path, {"LONG": "x" * 100})
    assert (info.value.line, info.value.column) == (1, 26)


def test_undefined_variable_in_a_comment_is_no_warning(tmp_path):
    path = write(tmp_path, '{ // see ${HOME_OF_NOBODY}\n "StorageDirectory": "/s" }')
    assert load_config(path, {}).warnings == ()


def test_empty_variable_name_is_refused(tmp_path):
    path = write(tmp_path, '{ "Name": "${:-x}" }')
    with pytest.raises(ConfigSyntaxError) as info:
        load_config(path, {})
    assert "Internal error" in info.value.hint


# -- paths -----------------------------------------------------------------------------
def test_relative_paths_resolve_against_the_file_or_the_folder(tmp_path):
    folder = tmp_path / "etc"
    folder.mkdir()
    write(folder, '{ "StorageDirectory": "data", "Plugins": ["plugins", "/abs/p.so"] }')
    by_file = load_config(folder / "orthanc.json", {})
    by_folder = load_config(folder, {})
    assert by_file.storage_dir == folder / "data" == by_folder.storage_dir
    assert by_file.index_dir == folder / "data"
    assert by_file.plugins == (str(folder / "plugins"), "/abs/p.so")
    assert any("does not exist" in w for w in by_file.warnings)


def test_a_relative_config_argument_is_made_absolute(tmp_path, monkeypatch):
    write(tmp_path, '{ "StorageDirectory": "s" }')
    monkeypatch.chdir(tmp_path)
    config = load_config("orthanc.json", {})
    assert config.path == tmp_path / "orthanc.json"
    assert config.storage_dir == tmp_path / "s"


def test_defaults_match_orthanc_1_10(tmp_path):
    config = load_config(write(tmp_path, "{}"), {})
    assert config.storage_dir == tmp_path / "OrthancStorage" == config.index_dir
    assert (config.compression, config.store_md5) == (False, True)
    assert (config.http_port, config.ssl, config.remote_access, config.auth_enabled) == (
        8042, False, False, False)
    assert (config.index_backend, config.storage_backend) == ("sqlite", "filesystem")
    assert config.local_url == "http://127.0.0.1:8042"


def test_tilde_is_not_expanded(tmp_path):
    config = load_config(write(tmp_path, '{ "StorageDirectory": "~/orthanc" }'), {})
    assert config.storage_dir == tmp_path / "~" / "orthanc"
    assert "does not expand it" in config.warnings[0]


# -- typed facts -------------------------------------------------------------------------
def test_duplicate_keys_last_wins_with_a_warning(tmp_path):
    path = write(tmp_path, '{\n "HttpPort": 1,\n "Sub": {"a": 1, "a": 2},\n "HttpPort": 8044\n}')
    config = load_config(path, {})
    assert config.http_port == 8044
    assert config.values["Sub"] == {"a": 2}
    assert any('"HttpPort" is set again (first at line 2)' in w for w in config.warnings)
    assert any('"Sub.a"' in w for w in config.warnings)


@pytest.mark.parametrize("text, problem", [
    ('{ "HttpPort": 8042.0 }', "must be an integer"),
    ('{ "HttpPort": 70000 }', "from 1 to 65535"),
    ('{ "SslEnabled": "false" }', "must be true or false"),
    ('{ "IndexDirectory": ["a"] }', "must be a string"),
    ('{ "StorageDirectory": "a\\u0000b" }', "without NUL"),
    ('{ "Plugins": [1] }', "list of strings"),
    ('{ "RegisteredUsers": "alice" }', "must be an object"),
])
def test_wrong_types_that_stop_orthanc_are_bad_input(tmp_path, problem, text):
    with pytest.raises(ConfigSyntaxError) as info:
        load_config(write(tmp_path, text), {})
    assert problem in info.value.message
    assert info.value.line == 1


def test_limits_are_read_and_bad_limits_warn(tmp_path):
    config = load_config(write(tmp_path, '{ "MaximumStorageSize": 100, "MaximumPatientCount": '
                                         '1.5, "MaximumStorageMode": "Reject" }'), {})
    assert (config.max_storage_size, config.max_patient_count) == (100, 0)
    assert config.max_storage_mode == "Reject"
    assert "applies no limit" in config.warnings[0]


def test_users_are_names_only_and_secrets_never_leave(tmp_path):
    path = write(tmp_path, '{ "RemoteAccessAllowed": true, '
                           '"RegisteredUsers": {"alice": "s3cr3t-pw", "bob": "hunter2-pw"} }')
    config = load_config(path, {})
    assert config.registered_users == ("alice", "bob")
    assert config.auth_enabled  # remote access without AuthenticationEnabled turns it on
    for text in (json.dumps(config.to_dict()), repr(config), " ".join(config.warnings)):
        assert "s3cr3t" not in text and "hunter2" not in text
    assert config.values["RegisteredUsers"]["alice"] == "s3cr3t-pw"


def test_explicit_authentication_wins(tmp_path):
    path = write(tmp_path, '{ "RemoteAccessAllowed": true, "AuthenticationEnabled": false }')
    assert not load_config(path, {}).auth_enabled


# -- backends ----------------------------------------------------------------------------
def test_enable_index_must_be_exactly_true(tmp_path):
    path = write(tmp_path, '{ "PostgreSQL": { "EnableIndex": "true", "EnableStorage": true } }')
    config = load_config(path, {})
    assert (config.index_backend, config.storage_backend) == ("sqlite", "postgresql")
    assert config.disabled_backends == ("PostgreSQL.EnableIndex",)
    assert "is a string" in config.warnings[0]


def test_enabled_backends(tmp_path):
    config = load_config(write(tmp_path, '{ "MySQL": { "EnableIndex": true } }'), {})
    assert (config.index_backend, config.storage_backend) == ("mysql", "filesystem")
    assert config.disabled_backends == () and config.warnings == ()


def test_two_index_backends_warn(tmp_path):
    text = '{ "PostgreSQL": {"EnableIndex": true}, "MySQL": {"EnableIndex": true} }'
    config = load_config(write(tmp_path, text), {})
    assert config.index_backend == "postgresql"
    assert "already provides it" in config.warnings[0]


def test_a_section_with_nothing_enabled(tmp_path):
    config = load_config(write(tmp_path, '{ "Odbc": { "EnableIndex": false } }'), {})
    assert config.disabled_backends == ("Odbc",)
    assert config.index_backend == "sqlite"


def test_object_storage_needs_its_plugin(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    text = '{ "Plugins": ["plugins"], "AwsS3Storage": {"BucketName": "b"} }'
    path = write(tmp_path, text)
    assert load_config(path, {}).storage_backend == "filesystem"
    (plugins / "libOrthancAwsS3Storage.so").write_bytes(b"")
    (plugins / "README.txt").write_text("not a plugin")
    config = load_config(path, {})
    assert config.storage_backend == "aws-s3"
    assert config.plugin_files == (plugins / "libOrthancAwsS3Storage.so",)


# -- files -------------------------------------------------------------------------------
def test_missing_paths_and_empty_folders(tmp_path):
    with pytest.raises(InputError, match="no Orthanc configuration at"):
        load_config(tmp_path / "nope.json", {})
    with pytest.raises(InputError, match=r"no \*\.json file in"):
        load_config(tmp_path, {})


def test_a_huge_file_is_refused_without_reading_it(tmp_path, monkeypatch):
    import orchestrator.orthanc.config_files as config_module  # where the files are read
    monkeypatch.setattr(config_module, "MAX_FILE_BYTES", 10)
    with pytest.raises(InputError, match="too large"):
        load_config(write(tmp_path, '{ "Name": "more than ten bytes" }'), {})


def test_the_debian_configuration_if_present():
    if not Path("/etc/orthanc/orthanc.json").exists():
        pytest.skip("no Debian Orthanc configuration here")
    config = load_config("/etc/orthanc/", {})
    assert config.storage_dir == Path("/var/lib/orthanc/db-v6") == config.index_dir
    assert config.file_defining("RegisteredUsers") == Path("/etc/orthanc/credentials.json")
    assert config.index_backend == "sqlite"


def test_the_reader_differs_from_orthanc_only_where_deliberate():
    differ = sorted(n for n, c in TORTURE.items() if c["ours"] != c["orthanc"])
    assert differ == ["lone-low-surrogate.json", "non-utf8-in-string.json"]
    assert all(TORTURE[n]["note"].startswith("deliberate") for n in differ)


# -- rewriting a key inside a section (relocate of a database index) -----------------------
SECTION_TEXT = """{
  // the index lives in PostgreSQL
  "Name" : "Database",
  "PostgreSQL" : {
    "EnableIndex" : true,   /* keep me */
    "Database" : "orthanc_db",
    "Database" : "${PG_DB}",
    "Password" : "${PG_PASSWORD}",
  },
  "MySQL" : { "Database" : "untouched" },
}
"""


def test_set_a_key_inside_a_section_keeps_every_other_byte():
    from orchestrator.orthanc.config_edit import set_string_value
    out = set_string_value(SECTION_TEXT, "Database", "orthanc_next", section="PostgreSQL")
    assert out == SECTION_TEXT.replace('"${PG_DB}"', '"orthanc_next"')
    out = set_string_value(SECTION_TEXT, "Database", "m2", section="MySQL")
    assert out == SECTION_TEXT.replace('"untouched"', '"m2"')


def test_set_a_key_inside_a_section_refuses_what_it_cannot_place():
    from orchestrator.orthanc.config_edit import set_string_value
    for section, key in (("PostgreSQL", "Host"), ("Odbc", "Database"), ("Name", "Database")):
        with pytest.raises(InputError) as info:
            set_string_value(SECTION_TEXT, key, "x", section=section)
        assert f'"{section}.{key}"' in info.value.message and info.value.hint
    with pytest.raises(InputError, match="not a string literal"):
        set_string_value(SECTION_TEXT, "EnableIndex", "x", section="PostgreSQL")
