"""The package port (orchestrator/host/packages.py) on a real Debian 12 host, run from inside.

One host for the module: each scenario starts and ends at a clean 1.10.1 (dpkg `ii`,
/etc/orthanc as shipped plus an admin's edit, orthanc.service running).
"""

from __future__ import annotations

import json

from tests.harness.debian_host import VERSIONS
from tests.hosts.conftest import etc_snapshot, run_port

OLD, TRIXIE, SID = VERSIONS["bookworm"], VERSIONS["trixie"], VERSIONS["sid"]
ADMIN_POLICY = b"#!/bin/sh\n# the admin's own policy: no restarts during maintenance\nexit 101\n"


def store_probe(host, patient: str) -> str:
    """Store a synthetic instance, read it back, return its ID (the ingest proof)."""
    body = json.dumps({"Tags": {"PatientID": patient, "PatientName": "PROBE"}})
    made = json.loads(host.http("/tools/create-dicom", method="POST", data=body))
    assert json.loads(host.http(f"/instances/{made['ID']}"))["ID"] == made["ID"]
    return made["ID"]


def admin_edits(host) -> None:
    """What a real admin's /etc/orthanc looks like: an edited conffile, a file of their own."""
    conf = host.path("/etc/orthanc/orthanc.json")
    text = conf.read_text()
    assert '"Name" : "Orthanc"' in text
    conf.write_text(text.replace('"Name" : "Orthanc"', '"Name" : "SiteA"'))
    host.run("printf '{\"SiteOwner\": \"radiology\"}\\n' > /etc/orthanc/site.json && "
             "chmod 640 /etc/orthanc/site.json && chown root:orthanc /etc/orthanc/site.json")
    host.run("systemctl restart orthanc")
    assert host.wait_http()["Name"] == "SiteA"


def test_jump_to_trixie_and_back_with_restart_held_and_config_exact(bookworm_host):
    host = bookworm_host
    admin_edits(host)
    store_probe(host, "BEFORE")
    before_etc = etc_snapshot(host)
    host.path("/usr/sbin/policy-rc.d").write_bytes(ADMIN_POLICY)
    host.run("chmod 750 /usr/sbin/policy-rc.d")

    # Staging while the service runs: version check, simulation, downloads, rollback .debs.
    staged = run_port(host, f"""
    pk.check_version("orthanc", "{TRIXIE}", "trixie")
    out["candidate"] = pk.candidate("orthanc", "trixie")
    moves = pk.simulate("trixie", ["orthanc={TRIXIE}"])
    pk.download("trixie", ["orthanc={TRIXIE}"])
    out["debs"] = [str(p) for p in pk.ensure_debs(rollback_pairs(moves))]
    out["moved"] = len(moves)
    dry = Packages(RealRunner(), Changes(dry=True))
    dry.install("trixie", ["orthanc={TRIXIE}"], log=Path("/root/run/dry.log"))
    out["dry"] = dry.changes.texts()
""")
    assert "error" not in staged, staged
    assert staged["candidate"] == TRIXIE
    assert any(d.endswith(f"orthanc_{OLD}_amd64.deb") for d in staged["debs"])
    assert any("apt-get install" in t and "-t trixie" in t for t in staged["dry"])
    assert host.dpkg_version() == ("ii", OLD)  # the dry run changed nothing
    assert host.path("/usr/sbin/policy-rc.d").read_bytes() == ADMIN_POLICY
    assert not host.path("/root/run/dry.log").exists()

    # The jump: service stopped, /etc/orthanc copied aside, restart held back.
    host.run("systemctl stop orthanc")
    jumped = run_port(host, f"""
    out["before"] = {{k: v.version for k, v in pk.states().items()}}
    pk.save_tree(Path("/etc/orthanc"), Path("/root/run/etc-orthanc"))
    pk.install("trixie", ["orthanc={TRIXIE}"], log=Path("/root/run/apt-forward.log"))
""")
    assert "error" not in jumped, jumped
    assert host.dpkg_version() == ("ii", TRIXIE)
    assert host.run("systemctl is-active orthanc", check=False).stdout.strip() == "inactive"
    assert "policy-rc.d denied" in host.path("/root/run/apt-forward.log").read_text()
    assert host.path("/usr/sbin/policy-rc.d").read_bytes() == ADMIN_POLICY
    host.run("systemctl start orthanc")
    assert host.wait_http()["Version"] == "1.12.7"
    store_probe(host, "ON-1.12.7")

    # And back: stop, reinstall 1.10.1, /etc/orthanc exactly as before, reset-failed, start.
    host.run("systemctl stop orthanc")
    back = run_port(host, f"""
    before = {{"orthanc": pk.state("orthanc").__class__("orthanc", "ii", pk.state("orthanc").status,
               "{OLD}")}}
    specs = rollback_specs(before, pk.states(), ["orthanc"])
    out["specs"] = specs
    pk.install("bookworm", specs, log=Path("/root/run/apt-back.log"))
    pk.restore_tree(Path("/root/run/etc-orthanc"), Path("/etc/orthanc"))
    out["left"] = tree_differences(Path("/root/run/etc-orthanc"), Path("/etc/orthanc"))
    pk.reset_failed("orthanc")
""")
    assert "error" not in back, back
    assert back["specs"] == [f"orthanc={OLD}"] and back["left"] == []
    assert host.dpkg_version() == ("ii", OLD)
    assert etc_snapshot(host) == before_etc
    host.run("systemctl start orthanc")
    system = host.wait_http()
    assert (system["Version"], system["Name"]) == ("1.10.1", "SiteA")
    store_probe(host, "BACK-ON-1.10.1")
    host.path("/usr/sbin/policy-rc.d").unlink()


def test_jump_to_sid_fails_half_way_and_the_way_back_is_clean(bookworm_host):
    host = bookworm_host
    before_etc = etc_snapshot(host)
    host.run("systemctl stop orthanc")
    failed = run_port(host, f"""
    before = pk.states()
    out["dcmtk"] = before["dcmtk"].version  # bookworm's, or trixie's after the test above
    pk.save_tree(Path("/etc/orthanc"), Path("/root/sid-etc"))
    try:
        pk.install("sid", ["orthanc={SID}"], log=Path("/root/sid.log"))
    except OrchestratorError as exc:
        out["install"] = [type(exc).__name__, exc.message, exc.hint]
    out["after"] = {{n: s.abbrev for n, s in pk.states().items() if not s.settled}}
    try:
        pk.repair()
    except OrchestratorError as exc:
        out["repair"] = [type(exc).__name__, exc.message]
    specs = rollback_specs(before, pk.states(), ["orthanc"])
    out["specs"] = specs
    pk.install("bookworm", specs, log=Path("/root/sid-back.log"))
    pk.restore_tree(Path("/root/sid-etc"), Path("/etc/orthanc"))
    pk.reset_failed("orthanc")
    out["unsettled"] = [s.name for s in pk.unsettled()]
""")
    assert "error" not in failed, failed
    kind, message, hint = failed["install"]
    assert kind == "HalfConfiguredError" and "\n" not in message and hint
    assert failed["after"] == {"dcmtk": "iF", "orthanc": "iF"}
    assert failed["repair"][0] == "HalfConfiguredError"  # sysusers still fails: reinstall needed
    assert failed["specs"] == [f"orthanc={OLD}", f"dcmtk={failed['dcmtk']}"]
    assert failed["unsettled"] == []
    assert host.dpkg_version() == ("ii", OLD)
    assert host.dpkg_version("dcmtk") == ("ii", failed["dcmtk"])
    assert "Unknown modifier" in host.path("/root/sid.log").read_text()
    assert etc_snapshot(host) == before_etc
    assert not host.path("/usr/sbin/policy-rc.d").exists()
    host.run("systemctl start orthanc")
    assert host.wait_http()["Version"] == "1.10.1"
    store_probe(host, "AFTER-SID")


def test_faults_are_distinct_errors_and_change_nothing(bookworm_host):
    host = bookworm_host
    host.run("python3 -c \"import fcntl,time; f=open('/var/lib/dpkg/lock-frontend','w'); "
             "fcntl.lockf(f, fcntl.LOCK_EX); open('/root/locked', 'w'); time.sleep(600)\" "
             "> /dev/null 2>&1 & echo $! > /root/locker.pid; "
             "while [ ! -e /root/locked ]; do sleep 0.02; done")  # held from here on
    try:
        got = run_port(host, f"""
    errors = {{}}
    for name, call in [
        ("locked", lambda: Packages(pk.runner, pk.changes, lock_wait=2).download(
            "trixie", ["orthanc={TRIXIE}"])),
        ("unknown", lambda: pk.check_version("orthanc", "1.12.8+dfsg-1", "trixie")),
    ]:
        try:
            call()
        except OrchestratorError as exc:
            errors[name] = [type(exc).__name__, exc.message, exc.hint]
    out["errors"] = errors
""")
    finally:
        host.run("kill $(cat /root/locker.pid); rm -f /root/locked")  # by PID, inside the host
    offline = run_port(host, """
    errors = {}
    for name, call in [
        ("network", lambda: pk.download(None, ["hello"])),
        ("deb", lambda: pk.ensure_deb("hello", "2.10-3")),
    ]:
        try:
            call()
        except OrchestratorError as exc:
            errors[name] = [type(exc).__name__, exc.message, exc.hint]
    out["errors"] = errors
""")
    host.run("mount -t tmpfs -o size=1m tmpfs /var/cache/apt/archives")
    try:
        full = run_port(host, f"""
    try:
        pk.download("trixie", ["orthanc={TRIXIE}"])
    except OrchestratorError as exc:
        out["full"] = [type(exc).__name__, exc.message, exc.hint]
""")
    finally:
        host.run("umount /var/cache/apt/archives")
    errors = {**got["errors"], **offline["errors"], "full": full["full"]}
    assert {k: v[0] for k, v in errors.items()} == {
        "locked": "AptLockedError", "unknown": "UnknownVersionError", "network": "NoNetworkError",
        "deb": "DebMissingError", "full": "DiskFullError"}
    assert "lock is still, after 2 s, held by python3 (pid " in errors["locked"][1]  # apt waited
    assert TRIXIE in errors["unknown"][1] and "1.13.0+dfsg-1+b1 (sid)" in errors["unknown"][1]
    for kind, message, hint in errors.values():
        assert "\n" not in message and hint
    assert host.dpkg_version() == ("ii", OLD)
