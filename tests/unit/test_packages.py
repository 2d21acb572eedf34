"""The package port with scripted apt/dpkg (real captured text): dry run, errors, policy-rc.d,
the exact /etc/orthanc copy. The same port runs against real hosts in tests/hosts/."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.errors import Completed
from orchestrator.host import apt_text
from orchestrator.host.changes import Changes
from orchestrator.host.dpkg_lock import posix_lock_holder
from orchestrator.host.packages import (
    HOLD_SCRIPT, KEEP_CONFFILES, AptLockedError, DebMissingError, DiskFullError,
    HalfConfiguredError, NoNetworkError, Packages, UnknownVersionError, rollback_pairs,
    rollback_specs,
)
from orchestrator.host.runner import FakeRunner
from orchestrator.host.tree import copy_tree, restore_tree, tree_differences

DATA = Path(__file__).resolve().parents[1] / "data" / "apt"
OLD = "1.10.1+dfsg-2+deb12u1"
NEW = "1.12.7+dfsg-4"
QUERY = ("dpkg-query", "-W", "-f", apt_text.DPKG_QUERY_FORMAT)
WAIT_LOCK = ("-o", "DPkg::Lock::Timeout=300")  # apt waits for the lock instead of failing
INSTALL = ("apt-get", "install", "-y", "-q", "--allow-downgrades", *KEEP_CONFFILES, *WAIT_LOCK,
           "-t", "trixie", f"orthanc={NEW}")
DOWNLOAD = ("apt-get", "install", "--download-only", "-y", "-q", *WAIT_LOCK, "-t", "trixie",
            f"orthanc={NEW}")
REPAIR = ("dpkg", "--configure", "-a", "--force-confdef", "--force-confold")


def ok(stdout: str = "", rc: int = 0) -> Completed:
    return Completed((), rc, stdout, "")


def data(name: str) -> str:
    return (DATA / name).read_text()


def port(tmp_path: Path, script: dict, *, dry: bool = False, **kw) -> tuple[Packages, FakeRunner]:
    runner = FakeRunner(script)
    kw.setdefault("dpkg_locks", (tmp_path / "lock-frontend",))  # never this machine's dpkg
    return Packages(runner, Changes(dry=dry), cache=tmp_path / "cache",
                    policy_rc_d=tmp_path / "policy-rc.d", **kw), runner


def installed(version: str) -> str:
    return f"orthanc\tii \t{version}\n"


def test_install_holds_restarts_logs_and_verifies(tmp_path):
    pk, runner = port(tmp_path, {INSTALL: ok("Setting up orthanc ...\n"),
                                 QUERY: ok(installed(NEW)), QUERY + ("orthanc",): ok(installed(NEW))})
    seen = []
    real_run = runner.run

    def spy(argv, **kw):
        if argv[:2] == ["apt-get", "install"] or tuple(argv[:2]) == ("apt-get", "install"):
            seen.append((tmp_path / "policy-rc.d").read_bytes())
        return real_run(argv, **kw)

    runner.run = spy
    pk.install("trixie", [f"orthanc={NEW}"], log=tmp_path / "run" / "apt.log")
    assert seen == [HOLD_SCRIPT]  # held while apt ran
    assert not (tmp_path / "policy-rc.d").exists()  # and gone afterwards
    assert "Setting up orthanc" in (tmp_path / "run" / "apt.log").read_text()
    assert "--force-confold" in (tmp_path / "run" / "apt.log").read_text()


def test_dry_run_records_the_commands_and_changes_nothing(tmp_path):
    pk, runner = port(tmp_path, {}, dry=True)
    pk.install("trixie", [f"orthanc={NEW}"], log=tmp_path / "apt.log")
    pk.repair()
    texts = pk.changes.texts()
    assert any("apt-get install -y -q --allow-downgrades" in t and "-t trixie" in t for t in texts)
    assert any("policy-rc.d exits 101" in t for t in texts)
    assert any("dpkg --configure -a" in t for t in texts)
    assert runner.calls == [] and not (tmp_path / "policy-rc.d").exists()
    assert not (tmp_path / "apt.log").exists()


def test_admins_policy_rc_d_is_put_back_byte_for_byte_even_after_a_failure(tmp_path):
    mine = tmp_path / "policy-rc.d"
    mine.write_bytes(b"#!/bin/sh\n# the admin's own\nexit 0\n")
    os.chmod(mine, 0o750)
    pk, _ = port(tmp_path, {INSTALL: ok(data("apt-get-sid-on-bookworm.txt"), rc=100)})
    with pytest.raises(HalfConfiguredError):
        pk.install("trixie", [f"orthanc={NEW}"], log=tmp_path / "apt.log")
    assert mine.read_bytes() == b"#!/bin/sh\n# the admin's own\nexit 0\n"
    assert mine.stat().st_mode & 0o7777 == 0o750


def test_apt_rc_0_with_a_package_left_half_configured_is_a_failure(tmp_path):
    pk, _ = port(tmp_path, {INSTALL: ok(), QUERY: ok(data("dpkg-query-after-sid.txt"))})
    with pytest.raises(HalfConfiguredError) as err:
        pk.install("trixie", [f"orthanc={NEW}"], log=tmp_path / "apt.log")
    assert sorted(s.name for s in err.value.states) == ["dcmtk", "orthanc"]
    assert "orthanc 1.13.0+dfsg-1+b1 (iF)" in err.value.message


@pytest.mark.parametrize("capture, error", [
    ("apt-get-locked.txt", AptLockedError),
    ("apt-get-unknown-version.txt", UnknownVersionError),
    ("apt-get-no-network-install.txt", NoNetworkError),
    ("apt-get-disk-full.txt", DiskFullError),
])
def test_download_failures_are_distinct_errors_with_a_hint(tmp_path, capture, error):
    pk, _ = port(tmp_path, {DOWNLOAD: ok(data(capture), rc=100)})
    with pytest.raises(error) as err:
        pk.download("trixie", [f"orthanc={NEW}"])
    assert "\n" not in err.value.message and err.value.hint
    assert err.value.completed.returncode == 100


def test_lock_error_names_the_holder(tmp_path):
    pk, _ = port(tmp_path, {DOWNLOAD: ok(data("apt-get-locked.txt"), rc=100)})
    with pytest.raises(AptLockedError, match=r"held by python3 \(pid \d+\)"):
        pk.download("trixie", [f"orthanc={NEW}"])


def test_an_apt_that_waited_for_the_lock_in_vain_says_so_and_names_the_holder(tmp_path):
    pk, _ = port(tmp_path, {INSTALL: ok(data("apt-get-lock-timeout.txt"), rc=100)})
    with pytest.raises(AptLockedError) as err:
        pk.install("trixie", [f"orthanc={NEW}"], log=tmp_path / "apt.log")
    assert err.value.message == ("apt-get install: the apt/dpkg lock is still, after 300 s, held "
                                 "by python3 (pid 41)")
    assert "pid 41" in err.value.hint


HOLD_LOCK = """
import fcntl, sys, time
f = open(sys.argv[1], "w")
fcntl.lockf(f, fcntl.LOCK_EX)  # as apt and dpkg take it: a POSIX write lock on the whole file
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _hold(path: Path, seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path), str(seconds)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_repair_waits_for_the_lock_an_orphaned_apt_holds(tmp_path):
    lock = tmp_path / "lock-frontend"
    holder = _hold(lock, 1.5)
    try:
        assert posix_lock_holder(lock) == holder.pid
        pk, runner = port(tmp_path, {REPAIR: ok(), QUERY: ok(installed(OLD))}, lock_wait=30)
        t0 = time.monotonic()
        pk.repair()
        assert time.monotonic() - t0 >= 1.0  # it waited for the holder to let go
        assert posix_lock_holder(lock) is None
        assert [tuple(c) for c in runner.calls].count(REPAIR) == 1  # dpkg ran once, after it
    finally:
        holder.kill()
        holder.wait(10)
        holder.stdout.close()


def test_repair_gives_up_after_the_wait_naming_the_holder(tmp_path):
    lock = tmp_path / "lock-frontend"
    holder = _hold(lock, 60)
    try:
        pk, runner = port(tmp_path, {}, lock_wait=1)
        with pytest.raises(AptLockedError) as err:
            pk.repair()
        comm = Path(f"/proc/{holder.pid}/comm").read_text().strip()
        assert err.value.message == (f"dpkg --configure: the apt/dpkg lock is still, after 1 s, "
                                     f"held by {comm} (pid {holder.pid})")
        assert runner.calls == []  # dpkg never ran
    finally:
        holder.kill()
        holder.wait(10)
        holder.stdout.close()


def test_dpkg_s_own_lock_message_is_a_lock_error(tmp_path):
    pk, _ = port(tmp_path, {REPAIR: ok(data("dpkg-configure-locked.txt"), rc=2)}, lock_wait=0)
    with pytest.raises(AptLockedError, match=r"held by a process \(pid 41\)$"):
        pk.repair()


def test_unknown_version_lists_the_known_ones(tmp_path):
    pk, _ = port(tmp_path, {("apt-cache", "policy", "orthanc"):
                            ok(data("apt-cache-policy-orthanc-bookworm.txt"))})
    pk.check_version("orthanc", NEW, "trixie")
    with pytest.raises(UnknownVersionError) as err:
        pk.check_version("orthanc", "1.12.8", "trixie")
    assert err.value.known == ["1.13.0+dfsg-1+b1", NEW, OLD]
    assert "1.12.7+dfsg-4 (trixie)" in err.value.message
    assert pk.candidate("orthanc", "sid") == "1.13.0+dfsg-1+b1"


def test_ensure_deb_uses_the_cache_then_apt_get_download(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / f"orthanc_{OLD}_amd64.deb").write_bytes(b"deb")
    pk, runner = port(tmp_path, {("dpkg", "--print-architecture"): ok("amd64\n"),
                                 ("apt-get", "download", "-q", "dcmtk=3.6.7-9~deb12u4"):
                                 ok(data("apt-get-no-network.txt"), rc=100)})
    assert pk.ensure_deb("orthanc", OLD).name == f"orthanc_{OLD}_amd64.deb"
    assert not any(c[:2] == ("apt-get", "download") for c in runner.calls)
    with pytest.raises(DebMissingError, match="cannot be downloaded"):
        pk.ensure_deb("dcmtk", "3.6.7-9~deb12u4")


def test_rollback_sets_from_real_states():
    moves = apt_text.parse_apt_simulation(data("apt-get-simulate-sid.txt"))
    pairs = dict(rollback_pairs(moves))
    assert pairs["orthanc"] == OLD and pairs["dcmtk"] == "3.6.7-9~deb12u4"
    assert "libssl3" not in pairs  # removed, not replaced: its replacement Breaks it
    before = apt_text.parse_dpkg_query(
        "orthanc\tii \t" + OLD + "\ndcmtk\tii \t3.6.7-9~deb12u4\n")
    now = apt_text.parse_dpkg_query(data("dpkg-query-after-sid.txt"))
    assert rollback_specs(before, now, ["orthanc"]) == [f"orthanc={OLD}", "dcmtk=3.6.7-9~deb12u4"]


def make_etc(root: Path) -> None:
    root.mkdir()
    (root / "orthanc.json").write_text('{"Name": "x"}\n')
    (root / "credentials.json").write_text("{}\n")
    os.chmod(root / "credentials.json", 0o640)
    (root / "sub").mkdir(mode=0o750)
    (root / "sub" / "a.json").write_text("{}")
    os.symlink("orthanc.json", root / "link.json")


def test_tree_restore_is_exact(tmp_path):
    etc, saved = tmp_path / "etc", tmp_path / "saved"
    make_etc(etc)
    copy_tree(etc, saved)
    assert tree_differences(etc, saved) == []
    (etc / "orthanc.json").write_text('{"DicomVersion": "2023b"}\n')  # a newer conffile kept
    (etc / "advanced.json").write_text("{}")  # a leftover
    os.chmod(etc / "credentials.json", 0o644)
    (etc / "link.json").unlink()
    (etc / "sub" / "a.json").unlink()
    (etc / "sub").rmdir()
    (etc / "sub").write_text("now a file")
    assert len(tree_differences(saved, etc)) >= 4
    restore_tree(saved, etc)
    assert tree_differences(saved, etc) == []
    assert (etc / "orthanc.json").read_text() == '{"Name": "x"}\n'
    assert os.readlink(etc / "link.json") == "orthanc.json"


def test_tree_copy_through_the_port_is_recorded_in_a_dry_run(tmp_path):
    etc = tmp_path / "etc"
    make_etc(etc)
    pk, _ = port(tmp_path, {}, dry=True)
    pk.save_tree(etc, tmp_path / "saved")
    pk.restore_tree(tmp_path / "saved", etc)
    assert not (tmp_path / "saved").exists()
    assert len(pk.changes.texts()) == 2


def test_a_half_configured_dpkg_is_refused_before_any_change(tmp_path):
    pk, _ = port(tmp_path, {QUERY: ok(data("dpkg-query-after-sid.txt"))})
    with pytest.raises(HalfConfiguredError, match="half-way") as err:
        pk.check_settled()
    assert "dpkg --configure -a" in err.value.hint
    assert "orthanc 1.13.0+dfsg-1+b1 (iF)" in err.value.message
    assert pk.changes.texts() == []
