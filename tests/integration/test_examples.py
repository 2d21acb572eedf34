"""The wheel carries the example plans and the systemd unit, and `orchestrator examples` finds,
prints and copies them (issue 12: `--help` says "see playbooks/", so they must ship)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from orchestrator.examples import example_files, examples_root

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True,
                          text=True, timeout=60)


def test_an_installed_wheel_carries_every_playbook_and_the_unit(tmp_path):
    wheels, prefix = tmp_path / "wheels", tmp_path / "prefix"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "-w", str(wheels), str(REPO)], check=True, capture_output=True, timeout=300)
    wheel = next(wheels.glob("orchestrator-*.whl"))
    # Lay the wheel's data scheme out under a prefix, as an installer does (installing it
    # with pip here would replace the editable install of the running environment).
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            head, sep, rest = name.partition(".data/data/")
            if sep and "/" not in head:
                target = prefix / rest
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(name))
    root = examples_root([prefix])
    assert root == prefix / "share" / "orchestrator"
    shipped = {str(p) for p in example_files(root)}
    expected = {str(p.relative_to(REPO)) for d in ("playbooks", "systemd")
                for p in (REPO / d).iterdir() if p.is_file()}
    assert shipped == expected
    for rel in shipped:
        assert (root / rel).read_bytes() == (REPO / rel).read_bytes()


def test_examples_lists_prints_and_copies_without_overwriting(tmp_path):
    listed = _cli("examples")
    assert listed.returncode == 0 and "playbooks/debian-systemd.yaml" in listed.stdout
    shown = _cli("examples", "debian-systemd")
    assert shown.returncode == 0
    assert shown.stdout == (REPO / "playbooks" / "debian-systemd.yaml").read_text()
    dest = tmp_path / "new" / "plans"
    (dest / "playbooks").mkdir(parents=True)
    (dest / "playbooks" / "fleet.yml").write_text("mine\n")
    copied = _cli("examples", "--copy", str(dest))
    assert copied.returncode == 0, copied.stderr
    assert (dest / "playbooks" / "fleet.yml").read_text() == "mine\n"  # kept
    assert (dest / "systemd" / "orthanc-upgrade@.service").is_file()
    assert "kept 1 existing file" in copied.stderr


def test_an_unknown_example_is_bad_input_listing_the_names():
    bad = _cli("examples", "nope")
    assert bad.returncode == 2
    assert "no example called 'nope'" in bad.stderr and "debian-systemd.yaml" in bad.stderr
    assert "Traceback" not in bad.stderr
