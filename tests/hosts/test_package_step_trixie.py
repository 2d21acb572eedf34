"""The `package` step and `revert` on a real Debian 13 host: 1.12.7 (trixie) -> 1.13.0 (sid),
every instance kept; then, after new instances arrived on 1.13.0 (which altered the index),
`revert` puts 1.12.7 back on the snapshot with nothing lost and stores working.

sid's 1.13.0 moves keys of orthanc.json into a new conffile, advanced.json. An orthanc.json
the admin edited (a relocation edits it too) is kept, and Orthanc then refuses the key
defined twice: the package step fails before the start and rolls back (tested here), so the
successful jump uses a snapshot-only plan, with the stock orthanc.json."""

from __future__ import annotations

from tests.harness.debian_host import VERSIONS
from tests.hosts.conftest import WHEELS_INSIDE, etc_snapshot
from tests.hosts.test_package_step import instances, store, tool, write_plan

TRIXIE, SID = VERSIONS["trixie"], VERSIONS["sid"]


def test_jump_to_sid_on_debian_13_then_revert(trixie_image, wheels_trixie, host_factory):
    host = host_factory(trixie_image, wheels_trixie, name="trixie")
    host.install_tool(WHEELS_INSIDE)
    assert host.wait_http()["Version"] == "1.12.7"
    kept = {store(host, f"OLD-{i}") for i in range(2)}
    etc = etc_snapshot(host)

    edited = write_plan(host, "edited", folder="db-sid", version=SID, release="sid")
    done = tool(host, "run", edited)
    out = done.stdout + done.stderr
    assert done.returncode == 3, out
    assert "defined in both" in out and "merge your edits" in out
    assert host.dpkg_version() == ("ii", TRIXIE) and etc_snapshot(host) == etc
    assert host.wait_http()["Version"] == "1.12.7"

    plan = write_plan(host, "to-sid", folder=None, version=SID, release="sid")
    done = tool(host, "run", plan)
    assert done.returncode == 0, done.stdout + done.stderr
    assert host.dpkg_version() == ("ii", SID)
    assert host.wait_http()["Version"] == "1.13.0"
    assert instances(host) == kept  # every instance kept
    arrived = {store(host, f"NEW-{i}") for i in range(2)}

    done = tool(host, "revert", plan)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "1.13.0 altered the index: " in out and "AttachedFiles gained revision, customData" in out
    assert "the snapshot is put back" in out
    assert "2 instances received since the upgrade were carried back" in out
    assert host.dpkg_version() == ("ii", TRIXIE)
    assert etc_snapshot(host) == etc
    assert host.wait_http()["Version"] == "1.12.7"
    assert instances(host) == kept | arrived  # nothing lost
    store(host, "AFTER-REVERT")  # ingest works on the old version

    again = tool(host, "revert", plan)
    assert again.returncode == 1 and "a revert already" in again.stdout + again.stderr
