"""Our portable modules under a Windows-shaped Python (windows_shape/sitecustomize.py):
`sys.platform == "win32"`, the POSIX-only parts of os and signal gone, no fcntl, a
msvcrt whose locking() is real. Each run is a subprocess, so nothing leaks into this one.

The whole unit suite and a `plan` under the same shape:
    PYTHONPATH=tests/faults/windows_shape .venv/bin/python -m pytest tests/unit
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.world import UPGRADE_STEPS

ROOT = Path(__file__).resolve().parents[2]
SHAPE = Path(__file__).resolve().parent / "windows_shape"

# The unit tests of the modules that must already hold on Windows: the locks, the journal,
# the file port's modes, paths, secrets and credentials.
PORTABLE = ["tests/unit/test_lock.py", "tests/unit/test_journal.py", "tests/unit/test_paths.py",
            "tests/unit/test_private_modes.py", "tests/unit/test_secrets.py",
            "tests/unit/test_credentials.py"]

pytestmark = pytest.mark.skipif(sys.platform == "win32" or os.name != "posix",
                                reason="simulates Windows on Linux")


def _shaped(args: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SHAPE), str(ROOT)]),
           "USER": os.environ.get("USER", "root")}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, **kw)


def test_the_shape_is_windows_where_our_code_can_tell():
    code = ("import os, signal, sys, msvcrt\n"
            "assert sys.platform == 'win32'\n"
            "for a in ('geteuid', 'chown', 'fchown', 'getpgid', 'setsid', 'killpg', 'O_NOFOLLOW'):\n"
            "    assert not hasattr(os, a), a\n"
            "for s in ('SIGHUP', 'SIGKILL', 'SIGUSR1'):\n"
            "    assert not hasattr(signal, s), s\n"
            "try:\n"
            "    import fcntl\n"
            "except ImportError:\n"
            "    pass\n"
            "else:\n"
            "    raise AssertionError('fcntl imported')\n"
            "assert callable(msvcrt.locking)\n"
            "print('shaped')\n")
    done = _shaped(["-c", code])
    assert done.returncode == 0 and done.stdout.strip() == "shaped", done.stderr


def test_the_portable_modules_pass_their_unit_tests_under_windows_shape():
    # The Hypothesis sweep starts ~60 shaped interpreters; its example set runs unshaped.
    done = _shaped(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "not generated",
                    *PORTABLE])
    tail = "\n".join((done.stdout + done.stderr).splitlines()[-25:])
    assert done.returncode == 0, tail
    assert " passed" in done.stdout and "failed" not in done.stdout, tail


SHAPED_ENV = {"PYTHONPATH": str(SHAPE), "USER": os.environ.get("USER", "root")}


@pytest.mark.orthanc
def test_plan_of_the_process_manager_under_windows_shape(world_factory):
    import json

    w = world_factory().start()
    plan = w.plan(UPGRADE_STEPS.format(to=json.dumps(str(w.db.parent / "db-v7"))))
    rc, out, err = w.cli("plan", str(plan), env=SHAPED_ENV)
    assert rc == 0, (out, err)
    assert out["ok"] and [s["status"] for s in out["steps"]].count("would do") == len(out["steps"])


@pytest.mark.orthanc
def test_run_then_crash_and_rollback_under_windows_shape(world_factory):
    import json

    from tests.harness.world import sha256

    w = world_factory().start()
    plan = w.plan(UPGRADE_STEPS.format(to=json.dumps(str(w.db.parent / "db-v7"))))
    rc, out, err = w.cli("run", str(plan), env=SHAPED_ENV)
    assert rc == 0, (out, err)
    config = sha256(w.config)
    plan2 = w.plan(UPGRADE_STEPS.format(to=json.dumps(str(w.db.parent / "db-v8"))), name="p2.yaml")
    rc, out, err = w.cli("run", str(plan2), env={"ORCHESTRATOR_TEST_CRASH_AT": "upgrade:before"})
    assert rc == -9, (out, err)
    rc, out, err = w.cli("rollback", str(plan2), env=SHAPED_ENV)
    assert rc == 0 and sha256(w.config) == config, (out, err)
    assert w.counts() is not None
