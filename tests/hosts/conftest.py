"""Fixtures that boot real Debian hosts (tests/harness/debian_host.py).

Images are built once per machine and cached (IMAGE_DIR); every host is a
fresh overlay over an image, killed and deleted at teardown, even after a
failed test. The tool is installed inside from wheels of this checkout.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

from tests.harness import debian_host
from tests.harness.debian_host import BOOKWORM, SYSVINIT, TRIXIE, DebianHost

CHECKOUT = Path(__file__).resolve().parents[2]
WHEELS_INSIDE = "/mnt/wh"
PORT_PRELUDE = """
import json, sys, traceback
from pathlib import Path
from orchestrator.errors import OrchestratorError
from orchestrator.host.changes import Changes
from orchestrator.host.packages import Packages, rollback_pairs, rollback_specs
from orchestrator.host.runner import RealRunner
from orchestrator.host.tree import tree_differences
pk = Packages(RealRunner(), Changes())
out = {}
try:
"""
PORT_EPILOGUE = """
except OrchestratorError as exc:
    out["error"] = type(exc).__name__
    out["message"] = exc.message
    out["hint"] = exc.hint
print(json.dumps(out, default=str))
"""


@pytest.fixture(scope="session", autouse=True)
def _hosts_available():
    reason = debian_host.unavailable_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"Debian host tests cannot run in CI: {reason}")
        pytest.skip(reason)
    debian_host.sweep_stale_hosts()


def _image(request, image):
    report = request.config.pluginmanager.get_plugin("terminalreporter")
    return debian_host.ensure_image(image, log=(lambda m: report.write_line(m)) if report else None)


@pytest.fixture(scope="session")
def bookworm_image(request) -> Path:
    return _image(request, BOOKWORM)


@pytest.fixture(scope="session")
def trixie_image(request) -> Path:
    return _image(request, TRIXIE)


@pytest.fixture(scope="session")
def sysvinit_image(request) -> Path:
    return _image(request, SYSVINIT)


@pytest.fixture(scope="session")
def wheels(tmp_path_factory) -> Path:
    """Wheels of this checkout and its dependencies, for bookworm's python 3.11."""
    return debian_host.build_wheels(CHECKOUT, tmp_path_factory.mktemp("wheels") / "py311")


@pytest.fixture(scope="session")
def wheels_trixie(tmp_path_factory) -> Path:
    """The same wheels for trixie's python 3.13."""
    return debian_host.build_wheels(CHECKOUT, tmp_path_factory.mktemp("wheels") / "py313",
                                    python_version="3.13")


@pytest.fixture
def host_factory():
    """Boot fresh hosts; every one is killed and deleted at teardown."""
    made: list[DebianHost] = []

    def make(image_root: Path, wheels: Path | None = None, *, wait: bool = True,
             **kw) -> DebianHost:
        host = DebianHost(image_root, binds={wheels: WHEELS_INSIDE} if wheels else {}, **kw)
        made.append(host)
        host.boot(wait=wait)
        return host

    yield make
    for host in made:
        host.destroy()


@pytest.fixture(scope="module")
def bookworm_host(bookworm_image, wheels):
    """One Debian 12 host per module, the tool installed; scenarios must leave it as found."""
    host = DebianHost(bookworm_image, binds={wheels: WHEELS_INSIDE}, name="bookworm")
    try:
        host.boot()
        host.install_tool(WHEELS_INSIDE)
        yield host
    finally:
        host.destroy()


def run_port(host: DebianHost, body: str, *, timeout: float = 900) -> dict:
    """Run `body` (python, indented 4, filling `out`) with the package port inside `host`."""
    script = PORT_PRELUDE + body + PORT_EPILOGUE
    done = host.exec(["/opt/orchestrator/bin/python", "-c", script], timeout=timeout, check=False)
    if done.returncode != 0:
        raise AssertionError(f"port script failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def etc_snapshot(host: DebianHost, folder: str = "/etc/orthanc") -> str:
    """Every entry of `folder` with type, mode, owner, size and SHA-256: compared as text."""
    q = shlex.quote(folder)
    return host.run(f"cd {q} && find . -printf '%p %y %m %u %g %s %l\\n' | sort && "
                    "find . -type f -print0 | sort -z | xargs -0 sha256sum").stdout
