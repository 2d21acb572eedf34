"""The PostgreSQL / MySQL sections of a configuration: typed, secret-safe, places named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.errors import ExitCode, InputError
from orchestrator.host.databases import Engine
from orchestrator.orthanc.backends import (
    BackendDisabledError, Transport, index_database, plugin_version, read_backends)
from orchestrator.orthanc.config import load_config

SECRET = "S3cr:et\\pw"


def _config(tmp_path: Path, files: dict[str, str | dict], env: dict | None = None):
    folder = tmp_path / "etc"
    folder.mkdir(exist_ok=True)
    for name, body in files.items():
        (folder / name).write_text(body if isinstance(body, str) else json.dumps(body, indent=2))
    return load_config(folder, env or {})


def test_postgresql_section_from_its_own_file_with_defaults(tmp_path):
    cfg = _config(tmp_path, {"orthanc.json": {"Name": "x"},
                             "postgresql.json": {"PostgreSQL": {
                                 "EnableIndex": True, "Username": "orthanc",
                                 "Password": SECRET}}})
    (s,) = read_backends(cfg)
    assert s.engine is Engine.POSTGRESQL and s.file == tmp_path / "etc" / "postgresql.json"
    assert (s.index, s.storage, s.files_on_disk) == (True, False, True)
    assert (s.host, s.port, s.database, s.user) == ("localhost", 5432, "orthanc", "orthanc")
    assert s.transport is Transport.TCP and s.lock is True
    assert s.password == SECRET and s.password_from == "config"
    conn = s.connection()
    assert conn.password == SECRET and conn.origin == f"{s.file}: PostgreSQL"


def test_the_password_never_shows(tmp_path):
    cfg = _config(tmp_path, {"o.json": {"PostgreSQL": {"EnableIndex": True, "Username": "u",
                                                       "Password": SECRET}}})
    (s,) = read_backends(cfg)
    for text in (repr(s), json.dumps(s.to_dict()), repr(s.connection())):
        assert SECRET not in text and "S3cr" not in text


def test_password_from_an_environment_variable_is_named_not_shown(tmp_path):
    body = '{ "PostgreSQL": { "EnableIndex": true, "Username": "u",\n' \
           '  // the password comes from the unit\'s environment\n' \
           '  "Password": "${PG_PASSWORD}" } }'
    secret = "S3cr:et-pw"  # substituted into the raw JSON text, as Orthanc does: no backslash
    cfg = _config(tmp_path, {"o.json": body}, env={"PG_PASSWORD": secret})
    (s,) = read_backends(cfg)
    assert s.password == secret and s.password_from == "${PG_PASSWORD}"
    assert secret not in json.dumps(s.to_dict())


def test_connection_uri_wins_over_the_keys(tmp_path):
    cfg = _config(tmp_path, {"o.json": {"PostgreSQL": {
        "EnableIndex": True, "Host": "ignored", "Port": 1,
        "ConnectionUri": "postgresql://orthanc:p%40ss@db.example:6543/orthanc_db"}}})
    (s,) = read_backends(cfg)
    assert (s.host, s.port, s.database, s.user, s.password) == (
        "db.example", 6543, "orthanc_db", "orthanc", "p@ss")
    assert s.from_uri and s.password_from == "ConnectionUri"


def test_postgresql_unix_socket_folder(tmp_path):
    cfg = _config(tmp_path, {"o.json": {"PostgreSQL": {
        "EnableIndex": True, "Host": "/var/run/postgresql", "Username": "orthanc"}}})
    (s,) = read_backends(cfg)
    assert s.transport is Transport.UNIX_SOCKET and s.password_from == "none"
    assert s.connection().where == "socket /var/run/postgresql/.s.PGSQL.5432"


def test_mysql_socket_on_localhost_tcp_elsewhere(tmp_path):
    cfg = _config(tmp_path, {"o.json": {"MySQL": {"EnableIndex": True, "Database": "orthanc",
                                                  "Username": "o", "Password": "p"}}})
    (s,) = read_backends(cfg)
    assert (s.port, s.socket, s.transport) == (3306, "/var/run/mysqld/mysqld.sock",
                                                Transport.UNIX_SOCKET)
    cfg = _config(tmp_path, {"o.json": {"MySQL": {"EnableIndex": True, "Database": "orthanc",
                                                  "Host": "10.0.0.5", "Port": 3307}}})
    (s,) = read_backends(cfg)
    assert s.transport is Transport.TCP and s.connection().where == "10.0.0.5:3307"


def test_storage_in_the_database_too(tmp_path):
    cfg = _config(tmp_path, {"o.json": {"PostgreSQL": {"EnableIndex": True,
                                                       "EnableStorage": True}}})
    (s,) = read_backends(cfg)
    assert s.storage and not s.files_on_disk


@pytest.mark.parametrize("flag", ["true", 1, None])
def test_enable_index_counts_only_when_exactly_true(tmp_path, flag):
    cfg = _config(tmp_path, {"o.json": {"PostgreSQL": {"EnableIndex": flag, "Username": "u"}}})
    (s,) = read_backends(cfg)
    assert not s.index and not s.enabled and s.not_true
    with pytest.raises(BackendDisabledError) as info:
        index_database(cfg)
    err = info.value
    assert err.exit_code == ExitCode.BAD_INPUT and "\n" not in err.message
    assert f"{tmp_path / 'etc' / 'o.json'}: PostgreSQL.EnableIndex" in err.message
    assert "EnableIndex" in err.hint


@pytest.mark.parametrize("body", [{"EnableIndex": False, "EnableStorage": False}, {"Port": 5432}])
def test_a_section_switched_off_is_a_sqlite_site(tmp_path, body):
    """Debian's postgresql.json and mysql.json ship with both flags false."""
    cfg = _config(tmp_path, {"o.json": {"PostgreSQL": body}})
    (s,) = read_backends(cfg)
    assert not s.enabled and not s.not_true
    assert index_database(cfg) is None


def test_section_absent_means_sqlite(tmp_path):
    cfg = _config(tmp_path, {"o.json": {"Name": "x"}})
    assert read_backends(cfg) == () and index_database(cfg) is None


@pytest.mark.parametrize("section,key,value", [
    ("PostgreSQL", "Port", "5432"), ("PostgreSQL", "Port", 70000), ("PostgreSQL", "Host", 5),
    ("PostgreSQL", "Lock", "yes"), ("MySQL", "Database", "orthanc-db"), ("MySQL", "Database", ""),
    ("PostgreSQL", "ConnectionUri", "mysql://x@y/z"),
])
def test_malformed_values_name_file_and_key(tmp_path, section, key, value):
    body = {"EnableIndex": True, "Database": "orthanc", key: value}
    cfg = _config(tmp_path, {"o.json": {section: body}})
    with pytest.raises(InputError) as info:
        read_backends(cfg)
    assert f"o.json: {section}.{key}" in info.value.message and info.value.hint


def test_plugin_version_from_the_library_name(tmp_path):
    lib = tmp_path / "lib"
    plugins = tmp_path / "plugins"
    lib.mkdir()
    plugins.mkdir()
    (lib / "libOrthancMySQLIndex.so.4.3").write_bytes(b"")
    (plugins / "libOrthancMySQLIndex.so").symlink_to(lib / "libOrthancMySQLIndex.so.4.3")
    cfg = _config(tmp_path, {"o.json": {"Plugins": [str(plugins)],
                                        "MySQL": {"EnableIndex": True, "Database": "o"}}})
    assert plugin_version(cfg, Engine.MYSQL) == "4.3"
    assert plugin_version(cfg, Engine.POSTGRESQL) is None


def test_plugin_version_from_system():
    from orchestrator.orthanc.plugin_index import backend_plugin
    assert backend_plugin({"DatabaseBackendPlugin":
                           "/usr/lib/orthanc/libOrthancPostgreSQLIndex.so.4.0"}) == (
        Engine.POSTGRESQL, "4.0")
    assert backend_plugin({"DatabaseBackendPlugin":
                           "/usr/lib/orthanc/libOrthancMySQLIndex.so.4.3"}) == (Engine.MYSQL, "4.3")
    assert backend_plugin({"DatabaseBackendPlugin": None}) == (None, None)
    assert backend_plugin({}) == (None, None)
