"""Integration fixtures for service managers: one real systemd per test session.

`systemd_sandbox` boots systemd as PID 1 of a private pid + mount namespace
(tests/harness/systemd.py, following the shared recipe) and powers it off at
the end of the session. Tests install their own units on free ports; every
command reaches the sandbox through `systemd_sandbox.runner` (nsenter).
"""

from __future__ import annotations

import shutil

import pytest

from tests.harness.systemd import SystemdSandbox, unavailable_reason


@pytest.fixture(scope="session")
def systemd_sandbox(tmp_path_factory):
    """A booted systemd sandbox, shared by the whole session (skips when not root)."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("systemd-sandbox")
    sandbox = SystemdSandbox(root)
    sandbox.boot()
    yield sandbox
    sandbox.shutdown()
    shutil.rmtree(root, ignore_errors=True)
