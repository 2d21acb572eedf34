"""The package port on a real Debian 13 host: 1.12.7 (trixie) -> 1.13.0 (sid) and back."""

from __future__ import annotations

from tests.harness.debian_host import VERSIONS
from tests.hosts.conftest import WHEELS_INSIDE, etc_snapshot, run_port
from tests.hosts.test_package_port import store_probe

TRIXIE, SID = VERSIONS["trixie"], VERSIONS["sid"]


def test_jump_to_sid_and_back_on_debian_13(trixie_image, wheels_trixie, host_factory):
    host = host_factory(trixie_image, wheels_trixie, name="trixie")
    host.install_tool(WHEELS_INSIDE)
    assert host.wait_http()["Version"] == "1.12.7"
    store_probe(host, "ON-1.12.7")
    before_etc = etc_snapshot(host)
    host.run("systemctl stop orthanc")
    done = run_port(host, f"""
    before = pk.states()
    moves = pk.simulate("sid", ["orthanc={SID}"])
    out["debs"] = len(pk.ensure_debs(rollback_pairs(moves)))
    pk.save_tree(Path("/etc/orthanc"), Path("/root/run/etc-orthanc"))
    pk.install("sid", ["orthanc={SID}"], log=Path("/root/run/apt-forward.log"))
    out["forward"] = pk.state("orthanc").abbrev + " " + pk.state("orthanc").version
""")
    assert "error" not in done, done
    assert done["forward"] == f"ii {SID}"
    assert host.run("systemctl is-active orthanc", check=False).stdout.strip() == "inactive"
    host.run("systemctl start orthanc")
    assert host.wait_http()["Version"] == "1.13.0"
    store_probe(host, "ON-1.13.0")

    host.run("systemctl stop orthanc")
    back = run_port(host, f"""
    from orchestrator.host.apt_text import parse_dpkg_query
    before = parse_dpkg_query("orthanc\\tii \\t{TRIXIE}\\n")
    specs = rollback_specs(before, pk.states(), ["orthanc"])
    pk.install("trixie", specs, log=Path("/root/run/apt-back.log"))
    pk.restore_tree(Path("/root/run/etc-orthanc"), Path("/etc/orthanc"))
    pk.reset_failed("orthanc")
""")
    assert "error" not in back, back
    assert host.dpkg_version() == ("ii", TRIXIE)
    assert etc_snapshot(host) == before_etc
    host.run("systemctl start orthanc")
    # Seen here: 1.12.7 answers and stores on the index 1.13.0 touched (1.10.1 would fail
    # every store, ORTHANC.md); the package step still restores the index copy on a rollback.
    assert host.wait_http()["Version"] == "1.12.7"
    store_probe(host, "BACK-ON-1.12.7")
