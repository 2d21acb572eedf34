"""One lock per Orthanc (real processes, real files), and state files that refuse symlinks."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator.errors import ExitCode, JournalOpenError
from orchestrator.journal import Event, Journal
from orchestrator.lock import (LOCK_DIR_ENV, OrthancLock, RunLock, config_key, database_key,
                               index_key, lock_dir, read_lock_owner, sqlite_key)
from orchestrator.statefile import WINDOWS, UnsafeStatePathError

ROOT = Path(__file__).resolve().parents[2]

HOLDER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from orchestrator.lock import OrthancLock, RunLock
    state, service, index = sys.argv[2], sys.argv[3], sys.argv[4]
    with RunLock.for_service(state, service).acquire("run", service=service, state_dir=state):
        with OrthancLock.for_sqlite(index).acquire("run", service=service, state_dir=state):
            print("held", flush=True)
            sys.stdin.read()
""")

CONTENDER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from orchestrator.errors import OrchestratorError
    from orchestrator.lock import OrthancLock, RunLock
    state, service, index = sys.argv[2], sys.argv[3], sys.argv[4]
    try:
        with RunLock.for_service(state, service).acquire("rollback", service=service,
                                                         state_dir=state):
            OrthancLock.for_sqlite(index).acquire("rollback", service=service, state_dir=state)
    except OrchestratorError as exc:
        print(exc.message)
        raise SystemExit(int(exc.exit_code))
    print("acquired")
""")


@pytest.fixture
def locks(tmp_path, monkeypatch):
    where = tmp_path / "locks"
    monkeypatch.setenv(LOCK_DIR_ENV, str(where))
    return where


def _index(tmp_path: Path) -> Path:
    db = tmp_path / "var" / "db-v6"
    db.mkdir(parents=True)
    (db / "index").write_bytes(b"SQLite format 3\0")
    return db


def test_a_second_run_on_the_same_orthanc_is_refused_naming_the_holder(tmp_path, locks):
    db = _index(tmp_path)
    # The second plan reaches the same index through a symlink and a `..`.
    (tmp_path / "alias").symlink_to(tmp_path / "var")
    other_path = tmp_path / "alias" / "db-v6" / ".." / "db-v6"
    env = {**os.environ, LOCK_DIR_ENV: str(locks)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(ROOT), str(tmp_path / "state-a"),
                               "orthanc", str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        second = subprocess.run([sys.executable, "-c", CONTENDER, str(ROOT),
                                 str(tmp_path / "state-b"), "pacs", str(other_path)],
                                capture_output=True, text=True, env=env)
        assert second.returncode == ExitCode.JOURNAL_OPEN == 5, second.stderr
        msg = second.stdout
        assert f"pid {holder.pid}" in msg and "run of orthanc" in msg and " since " in msg
        assert str(tmp_path / "state-a") in msg and str(db / "index") in msg
    finally:
        holder.stdin.close()
        holder.wait(30)
    again = subprocess.run([sys.executable, "-c", CONTENDER, str(ROOT), str(tmp_path / "state-b"),
                            "pacs", str(other_path)], capture_output=True, text=True, env=env)
    assert again.returncode == 0 and again.stdout.strip() == "acquired", again.stderr


def test_another_orthanc_is_not_blocked(tmp_path, locks):
    a, b = _index(tmp_path), tmp_path / "other"
    b.mkdir()
    with OrthancLock.for_sqlite(a).acquire("run"):
        OrthancLock.for_sqlite(b).acquire("run").release()


def test_the_holder_of_an_orthanc_lock_is_readable_and_a_dead_one_is_stale(tmp_path, locks):
    db = _index(tmp_path)
    lock = OrthancLock.for_sqlite(db).acquire("run", service="orthanc", state_dir="/s")
    try:
        owner = read_lock_owner(lock.path)
        assert owner is not None and owner.pid == os.getpid() and owner.key == sqlite_key(db)
        with pytest.raises(JournalOpenError) as err:
            OrthancLock.for_sqlite(db).acquire("run")
        assert err.value.exit_code == ExitCode.JOURNAL_OPEN
    finally:
        lock.release()
    code = ("import sys, os; sys.path.insert(0, sys.argv[1]);"
            "from orchestrator.lock import OrthancLock;"
            "OrthancLock.for_sqlite(sys.argv[2]).acquire('run'); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(ROOT), str(db)], check=True,
                   env={**os.environ, LOCK_DIR_ENV: str(locks)})
    lock = OrthancLock.for_sqlite(db).acquire("run")
    try:
        assert "stale lock" in lock.stale_message()
    finally:
        lock.release()


def test_database_identity_writes_loopback_and_default_ports_one_way():
    assert database_key("PostgreSQL", "127.0.0.1", None, "orthanc") == \
        database_key("postgresql", "localhost", 5432, "orthanc") == "postgresql://localhost:5432/orthanc"
    assert database_key("mysql", "/var/run/mysqld/mysqld.sock", 0, "o") == "mysql://localhost:3306/o"
    assert database_key("postgresql", "db1", 5433, "o") != database_key("postgresql", "db1", 5432, "o")


def test_index_identity_from_the_backend_section_never_holds_the_password(tmp_path):
    assert index_key("sqlite", tmp_path) == sqlite_key(tmp_path)
    assert index_key("postgresql", tmp_path, {"Host": "127.0.0.1", "Database": "o"}) == \
        "postgresql://localhost:5432/o"
    uri = "postgresql://u:s3cr%2Ft@db1:5433/orthanc?sslmode=require"
    assert index_key("postgresql", tmp_path, {"ConnectionUri": uri}) == \
        "postgresql://db1:5433/orthanc"
    (tmp_path / "conf").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "conf")
    assert config_key(tmp_path / "alias") == config_key(tmp_path / "conf")


def test_lock_folder_is_fixed_unless_overridden():
    if WINDOWS:
        assert lock_dir({"ProgramData": "D:/PD"}) == Path("D:/PD") / "orchestrator" / "locks"
    else:
        assert lock_dir({}) == Path("/run/lock/orchestrator")
    assert lock_dir({LOCK_DIR_ENV: "/x"}) == Path("/x")


def test_state_folder_and_files_are_created_private(tmp_path):
    state = tmp_path / "new" / "state"
    RunLock.for_service(state, "svc").acquire("run").release()
    Journal.for_service(state, "svc").append(Event.RUN_STARTED, run_id="r")
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
    for name in ("svc.lock", "svc.journal"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600


@pytest.mark.parametrize("name", ["svc.lock", "svc.journal"])
def test_a_symlink_where_a_state_file_belongs_is_refused_naming_it(tmp_path, name):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    (state / name).symlink_to(victim)
    with pytest.raises(UnsafeStatePathError) as err:
        if name.endswith(".lock"):
            RunLock.for_service(state, "svc").acquire("run")
        else:
            Journal.for_service(state, "svc").append(Event.RUN_STARTED, run_id="r")
    assert str(state / name) in err.value.message and "symlink" in err.value.message
    assert err.value.exit_code == ExitCode.BAD_INPUT
    assert victim.read_bytes() == b"precious\n"
    if name.endswith(".journal"):
        with pytest.raises(UnsafeStatePathError):
            Journal.for_service(state, "svc").records()


def test_a_symlinked_or_shared_state_folder_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(UnsafeStatePathError, match="is a symlink"):
        RunLock.for_service(tmp_path / "link", "svc").acquire("run")
    if WINDOWS:
        return  # mode bits carry no meaning there
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(UnsafeStatePathError, match="writable by others"):
        Journal.for_service(shared, "svc").append(Event.RUN_STARTED, run_id="r")
    assert not (shared / "svc.journal").exists()


def test_a_hard_link_where_the_lock_belongs_is_refused(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    victim = state / "victim"
    victim.write_bytes(b"precious\n")
    os.link(victim, state / "svc.lock")
    with pytest.raises(UnsafeStatePathError, match="hard links"):
        RunLock.for_service(state, "svc").acquire("run")
    assert victim.read_bytes() == b"precious\n"
