"""`inspect` warns when the storage folder is open to every local user (issue 12: patient data
kept private); Debian keeps /var/lib/orthanc at 0750."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest


@pytest.fixture
def open_folder():
    # Directly under /tmp (1777): every folder above it lets others in, as on a real host
    # whose /var/lib/orthanc was made 0755. pytest's own tmp_path sits in a 0700 folder.
    root = Path(tempfile.mkdtemp(prefix="orch-inspect-modes-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _inspect(config: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "orchestrator", "inspect", str(config), "--json"],
                          capture_output=True, text=True, timeout=120)
    return json.loads(done.stdout)


def test_a_storage_folder_open_to_others_is_a_warning_and_a_closed_one_is_not(open_folder):
    storage = open_folder / "db"
    storage.mkdir()
    config = open_folder / "orthanc.json"
    config.write_text(json.dumps({"StorageDirectory": str(storage), "HttpPort": 18042, "RemoteAccessAllowed": False}))
    os.chmod(open_folder, 0o755)
    os.chmod(storage, 0o755)
    codes = {h["code"]: h for h in _inspect(config)["hazards"]}
    assert codes["storage-world-readable"]["severity"] == "warning"
    assert str(storage) in codes["storage-world-readable"]["message"]
    os.chmod(storage, 0o750)
    assert "storage-world-readable" not in {h["code"] for h in _inspect(config)["hazards"]}
