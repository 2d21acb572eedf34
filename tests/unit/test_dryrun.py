"""Dry-run lives in one place: the Changes recorder. Ports record the same lines either way."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from orchestrator.errors import Completed
from orchestrator.host.changes import Changes
from orchestrator.host.clock import FakeClock
from orchestrator.host.files import Files
from orchestrator.host.host import Commands
from orchestrator.host.processes import Ended, Processes
from orchestrator.host.runner import FakeRunner
from orchestrator.host.service import ServicePort
from orchestrator.services.base import ServiceStatus, State


def _tree_digest(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def _scenario(files: Files, root: Path) -> list:
    """The same sequence of reads and changes a relocation does."""
    src, dst = root / "src", root / "new dir; 'x'"
    seen = []
    files.make_dir(dst, like=src)
    files.precopy([(src / "index", dst / "index")], f"pre-copy the index into {dst}")
    seen.append(sorted(files.list_files(dst)))
    rels = files.walk(src, skip=("index",))
    files.link([(src / r, dst / r) for r in rels], f"link {len(rels)} files into {dst}")
    seen.append(sorted(set(files.walk(src, skip=("index",))) - set(files.walk(dst))))
    files.copy([(src / "index", dst / "index")], f"copy the index into {dst}")
    seen.append(files.exists(dst / "index"))
    files.write(root / "cfg.json", b'{"StorageDirectory": "new"}\n', "rewrite cfg.json")
    files.remove([dst / rels[0]], "remove one link")
    seen.append(files.exists(dst / rels[0]))
    files.rename(dst, root / "aside", "move aside")
    seen.append((files.exists(dst), files.is_dir(root / "aside")))
    return seen


def _fixture(root: Path) -> None:
    (root / "src" / "ab" / "cd").mkdir(parents=True)
    (root / "src" / "index").write_bytes(b"SQLite index")
    for n in range(3):
        (root / "src" / "ab" / "cd" / f"file-{n}").write_bytes(b"x" * n)
    (root / "cfg.json").write_bytes(b'{\n  // comment\n  "StorageDirectory": "old"\n}\n')


def test_dry_files_change_nothing_and_see_what_they_would_have_done(tmp_path):
    dry_root, real_root = tmp_path / "dry", tmp_path / "real"
    for r in (dry_root, real_root):
        _fixture(r)
    before = _tree_digest(dry_root)
    dry, real = Changes(dry=True), Changes(dry=False)
    dry_seen = _scenario(Files(dry), dry_root)
    real_seen = _scenario(Files(real), real_root)
    assert _tree_digest(dry_root) == before
    assert dry_seen == real_seen == [[], [], True, False, (False, True)]
    strip = lambda texts, root: [t.replace(str(root), "ROOT") for t in texts]
    assert strip(dry.texts(), dry_root) == strip(real.texts(), real_root)
    assert all(c.done for c in real.items) and not any(c.done for c in dry.items)


def test_real_copy_keeps_mode_and_content_and_write_is_atomic(tmp_path):
    src = tmp_path / "index"
    src.write_bytes(b"abc" * 1000)
    src.chmod(0o640)
    files = Files(Changes())
    digests = files.copy([(src, tmp_path / "copy")], "copy")
    assert digests[str(tmp_path / "copy")] == hashlib.sha256(b"abc" * 1000).hexdigest()
    assert (tmp_path / "copy").stat().st_mode & 0o777 == 0o640
    cfg = tmp_path / "c.json"
    cfg.write_bytes(b"old")
    cfg.chmod(0o600)
    files.write(cfg, b"new", "rewrite")
    assert cfg.read_bytes() == b"new" and cfg.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "copy", "index"]


def test_service_port_describes_the_managers_commands_and_acts_only_for_real():
    class Manager:
        kind, calls = "sysv", []
        target = type("T", (), {"name": "orthanc"})()

        def status(self):
            return ServiceStatus(State.RUNNING, 42, "PID 42")

        def stop(self, *, timeout):
            self.calls.append(("stop", timeout))

        def start(self, *, timeout):
            self.calls.append(("start", timeout))

        def stop_commands(self):
            return [["/etc/init.d/orthanc", "stop"]]

        def start_commands(self):
            return [["/etc/init.d/orthanc", "start"]]

    m = Manager()
    dry = ServicePort(m, Changes(dry=True))
    assert dry.status().running
    dry.stop(timeout=5)
    # Not stopped (the manager was not called), but later steps see what the stop would leave.
    assert m.calls == [] and not dry.status().running and dry.status().main_pid is None
    assert dry.status().state is State.STOPPED and "dry run" in dry.status().detail
    dry.start(timeout=5)
    assert dry.status() == m.status()  # as the real service is: running
    dry.changes.items.pop()
    real = ServicePort(m, Changes())
    real.stop(timeout=5)
    assert m.calls == [("stop", 5)]
    assert dry.changes.texts() == real.changes.texts() == \
        ["stop the sysv service orthanc: /etc/init.d/orthanc stop"]


def test_commands_are_argv_lists_and_quoted_only_in_the_text():
    hostile = ["/bin/echo", "a b", "'; rm -rf /", "--", "-x"]
    runner = FakeRunner({tuple(hostile): Completed((), 0, "ok", "")})
    dry = Commands(runner, Changes(dry=True))
    assert dry.run(hostile, timeout=5).returncode == 0 and runner.calls == []
    real = Commands(runner, Changes())
    real.run(hostile, timeout=5)
    assert runner.calls == [tuple(hostile)]
    assert real.changes.texts() == dry.changes.texts() == \
        ["run /bin/echo 'a b' ''\"'\"'; rm -rf /' -- -x"]


def test_a_dry_watched_run_records_and_returns_not_run(tmp_path):
    procs = Processes(Changes(dry=True), FakeClock())
    got = procs.run_watched(["/usr/sbin/Orthanc", "--upgrade", "cfg"], text="run it",
                            log_path=tmp_path / "log", timeout=10, stall=5)
    assert got.ended == Ended.NOT_RUN and not (tmp_path / "log").exists()
    assert procs.changes.texts() == ["run it"]


def test_a_precopy_is_brought_up_to_date_block_by_block(tmp_path):
    src, dst = tmp_path / "index", tmp_path / "copy" / "index"
    dst.parent.mkdir()
    src.write_bytes(os.urandom(300_000))
    files = Files(Changes())
    files.precopy([(src, dst)], "pre-copy")
    assert not dst.exists()  # not in place until the real copy
    data = bytearray(src.read_bytes())
    data[70_000:70_010] = b"x" * 10  # the running service changed a page...
    src.write_bytes(bytes(data[:250_000]) + b"and a new tail")  # ...and the size
    digest = files.copy([(src, dst)], "copy")[str(dst)]
    assert dst.read_bytes() == src.read_bytes()
    assert digest == hashlib.sha256(src.read_bytes()).hexdigest()
    assert sorted(p.name for p in dst.parent.iterdir()) == ["index"]


def test_new_folders_links_and_copies_keep_the_owner_of_their_source(tmp_path):
    if os.geteuid() != 0:
        import pytest

        pytest.skip("changing owners needs root")
    uid, gid = 4321, 4322
    src = tmp_path / "src"
    (src / "ab" / "cd").mkdir(parents=True)
    (src / "ab" / "cd" / "file").write_bytes(b"x")
    (src / "index").write_bytes(b"index")
    for p in (src, src / "ab", src / "ab" / "cd", src / "ab" / "cd" / "file", src / "index"):
        os.chown(p, uid, gid)
    (src / "ab").chmod(0o750)
    files = Files(Changes())
    dst = tmp_path / "dst"
    files.make_dir(dst, like=src)
    files.link([(src / "ab" / "cd" / "file", dst / "ab" / "cd" / "file")], "link")
    files.copy([(src / "index", dst / "index")], "copy")
    for p in (dst, dst / "ab", dst / "ab" / "cd", dst / "index"):
        assert (os.stat(p).st_uid, os.stat(p).st_gid) == (uid, gid), p
    assert os.stat(dst / "ab").st_mode & 0o777 == 0o750
