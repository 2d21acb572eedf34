"""apt/dpkg parsers over real captured output (tests/data/apt/, from a booted Debian 12 host)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.host import apt_text
from orchestrator.host.apt_text import AptFailure, DpkgStatus, Move

DATA = Path(__file__).resolve().parents[1] / "data" / "apt"


def text(name: str) -> str:
    return (DATA / name).read_text()


def test_dpkg_query_installed_and_unknown_packages():
    states = apt_text.parse_dpkg_query(text("dpkg-query-orthanc-ii.txt"))
    assert set(states) == {"libc6", "orthanc"}
    assert states["orthanc"].version == "1.10.1+dfsg-2+deb12u1"
    assert states["orthanc"].status is DpkgStatus.INSTALLED
    assert states["orthanc"].installed and states["orthanc"].settled


def test_dpkg_query_after_a_failed_jump_shows_half_configured():
    states = apt_text.parse_dpkg_query(text("dpkg-query-after-sid.txt"))
    unsettled = sorted(s.name for s in states.values() if not s.settled)
    assert unsettled == ["dcmtk", "orthanc"]
    assert states["orthanc"].abbrev == "iF"
    assert states["orthanc"].status is DpkgStatus.HALF_CONFIGURED
    assert not states["orthanc"].installed
    assert states["libc6"].version == "2.43-7" and states["libc6"].installed


def test_dpkg_query_after_a_failed_repair_is_still_half_configured():
    state = apt_text.parse_dpkg_query(text("dpkg-query-after-repair.txt"))["orthanc"]
    assert (state.abbrev, state.version) == ("iF", "1.13.0+dfsg-1+b1")


def test_policy_lists_every_release_newest_first():
    pol = apt_text.parse_apt_cache_policy(text("apt-cache-policy-orthanc-bookworm.txt"))
    assert pol.name == "orthanc"
    assert pol.installed == pol.candidate == "1.10.1+dfsg-2+deb12u1"
    assert pol.known() == ["1.13.0+dfsg-1+b1", "1.12.7+dfsg-4", "1.10.1+dfsg-2+deb12u1"]
    assert [v.priority for v in pol.versions] == [50, 100, 500]
    assert pol.versions[2].installed and not pol.versions[0].installed
    assert pol.versions[2].releases == ("bookworm", "bookworm-security", "now")
    assert pol.candidate_for("trixie") == "1.12.7+dfsg-4"
    assert pol.candidate_for("sid") == "1.13.0+dfsg-1+b1"
    assert pol.candidate_for(None) == "1.10.1+dfsg-2+deb12u1"
    assert pol.candidate_for("buster") is None


def test_policy_of_a_package_not_installed():
    pol = apt_text.parse_apt_cache_policy(text("apt-cache-policy-orthanc-postgresql-bookworm.txt"))
    assert pol.installed is None
    assert pol.in_release("trixie") == ["5.0+dfsg-3+b3"]


def test_policy_of_an_unknown_package_is_refused():
    with pytest.raises(ValueError):
        apt_text.parse_apt_cache_policy(text("apt-cache-policy-nosuchpkg.txt"))


def test_madison():
    rows = apt_text.parse_madison(text("apt-cache-madison-orthanc.txt"))
    assert rows[:3] == [("1.13.0+dfsg-1+b1", "sid"), ("1.12.7+dfsg-4", "trixie"),
                        ("1.10.1+dfsg-2+deb12u1", "bookworm")]


@pytest.mark.parametrize("name, failure", [
    ("apt-get-locked.txt", AptFailure.LOCKED),
    ("apt-get-unknown-version.txt", AptFailure.UNKNOWN_VERSION),
    ("apt-get-no-network.txt", AptFailure.NO_NETWORK),
    ("apt-get-no-network-install.txt", AptFailure.NO_NETWORK),
    ("apt-get-disk-full.txt", AptFailure.DISK_FULL),
    ("apt-get-sid-on-bookworm.txt", AptFailure.INTERRUPTED),
    ("dpkg-configure-a-after-sid.txt", AptFailure.INTERRUPTED),
    ("apt-get-rollback-after-sid.txt", AptFailure.OTHER),
])
def test_classify_real_failures(name, failure):
    assert apt_text.classify_apt_failure(text(name)) is failure


def test_lock_holder_and_missing_version():
    assert apt_text.lock_holder(text("apt-get-locked.txt"))[1] == "python3"
    assert apt_text.missing_version(text("apt-get-unknown-version.txt")) == ("orthanc", "9.9.9")


def test_simulation_of_the_jump_to_sid():
    moves = apt_text.parse_apt_simulation(text("apt-get-simulate-sid.txt"))
    by_name = {m.name: m for m in moves}
    orthanc = by_name["orthanc"]
    assert (orthanc.move, orthanc.old, orthanc.new) == (
        Move.REPLACE, "1.10.1+dfsg-2+deb12u1", "1.13.0+dfsg-1+b1")
    assert by_name["libssl3"].move is Move.REMOVE and by_name["libssl3"].old.startswith("3.0")
    assert by_name["dcmtk-data"].move is Move.NEW and by_name["dcmtk-data"].old == ""
    assert by_name["dcmtk"].old == "3.6.7-9~deb12u4"


def test_deb_filename_encodes_the_epoch():
    assert apt_text.deb_filename("zlib1g", "1:1.2.13.dfsg-1", "amd64") == \
        "zlib1g_1%3a1.2.13.dfsg-1_amd64.deb"
