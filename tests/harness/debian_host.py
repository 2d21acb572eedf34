"""Real Debian hosts for tests: an mmdebstrap image booted with systemd-nspawn.

Follows /work/shared/recipes/debian-host-containers.md. An `Image` is a recipe
(suite, packages, extra releases pinned low, .debs downloaded into the apt
cache while the build still has network). `ensure_image` builds it once per
machine into IMAGE_DIR as a tarball named after a hash of the recipe (a changed
recipe builds a new one; a lock file keeps concurrent builders apart) and keeps
an extracted copy beside it. A `DebianHost` is one throwaway machine: a fresh
overlay (upper folder of its own over the extracted image; the image itself is
never written), booted offline with `--private-network`, commands run inside
through nsenter with a clean environment, killed by PID and deleted.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

IMAGE_DIR = Path(os.environ.get("ORCH_TEST_IMAGES", "/var/cache/orchestrator-test-images"))
MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HARNESS_VERSION = 3  # bump when the build steps below change in a way the recipe does not show
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "orthanc", "python3", "python3-venv", "curl",
                 "ca-certificates", "sqlite3")
PLUGINS = ("orthanc-postgresql", "orthanc-mysql")

# What the frozen mirror reachable here holds.
VERSIONS = {"bookworm": "1.10.1+dfsg-2+deb12u1", "trixie": "1.12.7+dfsg-4", "sid": "1.13.0+dfsg-1+b1"}


@dataclass(frozen=True)
class Image:
    """The recipe of one host image; its hash names the cached tarball."""

    name: str
    suite: str
    include: tuple[str, ...] = BASE_PACKAGES
    extra: tuple[tuple[str, int], ...] = ()  # (release, pin priority), added to sources, pinned low
    download: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (release, pkg=ver...) into the cache
    # the .debs of every installed package stay in the cache (offline rollbacks), and of these:
    keep_also: tuple[str, ...] = PLUGINS

    def key(self) -> str:
        blob = json.dumps([HARNESS_VERSION, asdict(self)], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def sources(self) -> list[str]:
        lines = [f"deb {MIRROR} {self.suite} main"]
        if self.suite != "sid":
            lines.append(f"deb {SECURITY} {self.suite}-security main")
        return lines


BOOKWORM = Image(
    name="bookworm", suite="bookworm",
    extra=(("trixie", 100), ("sid", 50)),
    download=(("trixie", (f"orthanc={VERSIONS['trixie']}",) + PLUGINS),
              ("sid", (f"orthanc={VERSIONS['sid']}",) + PLUGINS)),
)
TRIXIE = Image(
    name="trixie", suite="trixie",
    extra=(("sid", 50),),
    download=(("sid", (f"orthanc={VERSIONS['sid']}",) + PLUGINS),),
)
SYSVINIT = Image(  # the SysV path: the same host with sysvinit-core as init
    name="bookworm-sysv", suite="bookworm",
    # without systemd at all: `nspawn --boot` runs systemd whenever its binary exists
    include=("sysvinit-core",) + tuple(p for p in BASE_PACKAGES if not p.startswith("systemd")),
    keep_also=(),
)


class HostError(RuntimeError):
    """The harness could not build, boot or drive a host."""


# -- images ---------------------------------------------------------------------------------------
def ensure_image(image: Image, *, log=None) -> Path:
    """Return the extracted root of `image`, building its tarball first when missing."""
    IMAGE_DIR.mkdir(parents=True, exist_ok=True)
    stem = IMAGE_DIR / f"{image.name}-{image.key()}"
    tarball, root = stem.with_suffix(".tar"), stem.with_suffix(".root")
    with open(IMAGE_DIR / f"{image.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another builder (another pytest) waits here
        if not tarball.exists():
            _prune(image.name)
            _build(image, tarball, log)
        if not (root / "etc" / "os-release").exists():
            _extract(tarball, root)
    return root


def _prune(name: str) -> None:
    """Delete older builds of an image (called under its lock, before a rebuild)."""
    for old in IMAGE_DIR.glob(f"{name}-" + "?" * 16 + ".*"):
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def _build(image: Image, tarball: Path, log) -> None:
    work = Path(tempfile.mkdtemp(prefix=f"build-{image.name}-", dir=IMAGE_DIR))
    root = work / "root"
    try:
        t0 = time.monotonic()
        _sh(["mmdebstrap", "--variant=minbase", "--aptopt=Acquire::Check-Valid-Until \"false\"",
             "--include=" + ",".join(image.include), image.suite, str(root), *image.sources()],
            timeout=1800)
        _configure_apt(image, root)
        _sh(["systemd-nspawn", "-D", str(root), "--register=no", "--keep-unit", "-q",
             "sh", "-ec", _download_script(image)], timeout=1800)
        tmp = tarball.with_suffix(".tar.part")
        _sh(["tar", "-C", str(root), "--numeric-owner", "--xattrs", "--xattrs-include=*",
             "-cf", str(tmp), "."], timeout=600)
        os.replace(tmp, tarball)
        if log:
            log(f"built image {image.name} in {time.monotonic() - t0:.1f}s -> {tarball}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _configure_apt(image: Image, root: Path) -> None:
    apt = root / "etc" / "apt"
    (apt / "apt.conf.d" / "99-valid-until").write_text('Acquire::Check-Valid-Until "false";\n')
    # The host's own cache is the rollback source: never let apt clean it after an install.
    (apt / "apt.conf.d" / "99-keep-debs").write_text('APT::Keep-Downloaded-Packages "true";\n')
    for release, prio in image.extra:
        (apt / "sources.list.d" / f"{release}.list").write_text(f"deb {MIRROR} {release} main\n")
        (apt / "preferences.d" / f"{release}.pref").write_text(
            f"Package: *\nPin: release n={release}\nPin-Priority: {prio}\n")
    # apt's daily timers would take the apt lock at random moments in a test.
    for unit in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        link = root / "etc" / "systemd" / "system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")


def _download_script(image: Image) -> str:
    lines = ["export DEBIAN_FRONTEND=noninteractive", "apt-get update -qq"]
    lines.append("apt-get install --download-only --reinstall -y -qq "
                 f"$(dpkg-query -W -f '${{Package}} ') {' '.join(image.keep_also)}")
    for release, pkgs in image.download:
        lines.append(f"apt-get install --download-only -y -qq -t {release} {' '.join(pkgs)}")
    return "\n".join(lines)


def _extract(tarball: Path, root: Path) -> None:
    part = root.with_suffix(".root.part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir()
    _sh(["tar", "-C", str(part), "--numeric-owner", "--xattrs", "--xattrs-include=*",
         "-xf", str(tarball)], timeout=600)
    shutil.rmtree(root, ignore_errors=True)
    os.replace(part, root)


def _sh(argv: list[str], *, timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise HostError(f"{shlex.join(argv[:4])} ... exited {proc.returncode}:\n{tail}")
    return proc


# -- hosts ----------------------------------------------------------------------------------------
_TOOLS: dict[tuple[str, str], Path] = {}  # (image root, wheels folder) -> a venv a host installed
class DebianHost:
    """One throwaway Debian machine booted from an image root; use as a context manager."""

    def __init__(self, image_root: Path, *, binds: dict[Path, str] | None = None,
                 name: str = "host", network: Path | None = None):
        self.image_root = Path(image_root)
        self.binds = dict(binds or {})
        self.network = network  # a network namespace to join; None: a private one
        hosts = IMAGE_DIR / "hosts"
        hosts.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=hosts))
        self.root = self.dir / "merged"
        self.nspawn: subprocess.Popen | None = None
        self.pid: int | None = None  # the container's PID 1, as seen from here
        self.timings: dict[str, float] = {}

    def __enter__(self) -> DebianHost:
        try:
            self.boot()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.destroy()

    def boot(self, *, timeout: float = 120, wait: bool = True) -> None:
        """Mount a fresh overlay over the image, boot it offline, wait until systemd is up."""
        t0 = time.monotonic()
        for d in ("upper", "work", "merged"):
            (self.dir / d).mkdir()
        _sh(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={self.image_root},upperdir={self.dir / 'upper'},workdir={self.dir / 'work'}",
             str(self.root)], timeout=30)
        argv = ["systemd-nspawn", "-D", str(self.root), "--boot", "--register=no", "--keep-unit",
                "-q"]
        argv.append(f"--network-namespace-path={self.network}" if self.network
                    else "--private-network")
        argv += [f"--bind-ro={src}:{dst}" for src, dst in self.binds.items()]
        console = open(self.dir / "console.log", "wb")
        self.nspawn = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        console.close()
        (self.dir / "nspawn.pid").write_text(str(self.nspawn.pid))  # for sweep_stale_hosts
        self.pid = self._find_init(deadline=time.monotonic() + 30)
        if wait:
            self.wait_running(timeout=timeout)
        self.timings["boot"] = time.monotonic() - t0

    def _find_init(self, *, deadline: float) -> int:
        assert self.nspawn is not None
        while time.monotonic() < deadline:
            if self.nspawn.poll() is not None:
                raise HostError(f"systemd-nspawn exited {self.nspawn.returncode}: {self.console()}")
            children = _children(self.nspawn.pid)
            for pid in children:
                try:
                    exe = os.readlink(f"/proc/{pid}/exe")
                except OSError:
                    continue
                if "nspawn" not in exe:  # the child has exec'd the container's init
                    return pid
            time.sleep(0.05)
        raise HostError(f"no init appeared under systemd-nspawn: {self.console()}")

    def wait_running(self, *, timeout: float = 120) -> str:
        """Wait for `systemctl is-system-running --wait`; return its word (running, degraded)."""
        deadline = time.monotonic() + timeout
        while True:  # before systemd's bus is up the answer is "offline" at once
            out = self.run("systemctl is-system-running --wait", timeout=timeout, check=False)
            state = out.stdout.strip()
            if state in ("running", "degraded") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if state not in ("running", "degraded"):
            raise HostError(f"host did not come up: is-system-running={state!r}; "
                            f"failed units: {self.run('systemctl --failed --plain', check=False).stdout}")
        return state

    def console(self) -> str:
        try:
            return (self.dir / "console.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def destroy(self, *, timeout: float = 30) -> None:
        """Stop the machine (SIGKILL to its init), unmount and delete it. Never raises.

        No clean poweroff: the machine is thrown away, and its orderly shutdown (~3.5 s of
        stopping units) proves nothing about the tool. Killed, the init takes its whole PID
        namespace along at once and systemd-nspawn exits.
        """
        if self.nspawn is not None:
            for pid in (self.pid, self.nspawn.pid):  # PID 1 first: takes its namespace along
                if pid is None or self.nspawn.poll() is not None:
                    continue
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    self.nspawn.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    pass
        if os.path.ismount(self.root):
            if subprocess.run(["umount", str(self.root)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(self.root)], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _nsenter(self, argv: list[str]) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-a", "env", "-i", f"PATH={PATH}", "HOME=/root",
                "LANG=C.UTF-8", "TERM=dumb", *argv]

    def exec(self, argv: list[str], *, timeout: float = 120, check: bool = True,
             input: str | None = None) -> subprocess.CompletedProcess:
        """Run argv inside the host with a clean environment."""
        proc = subprocess.run(self._nsenter([str(a) for a in argv]), capture_output=True, text=True,
                              errors="replace", timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise HostError(f"inside host: {shlex.join(argv)[:200]} exited {proc.returncode}:\n"
                            f"{(proc.stderr or proc.stdout)[-2000:]}")
        return proc

    def run(self, script: str, **kw) -> subprocess.CompletedProcess:
        """Run a shell script inside the host (`sh -c`)."""
        return self.exec(["sh", "-c", script], **kw)

    def path(self, inside: str) -> Path:
        """The host-side path of a file inside this machine (reads and writes pass the overlay)."""
        return self.root / inside.lstrip("/")

    def http(self, path: str, *, method: str = "GET", data: str | None = None,
             port: int = 8042, check: bool = True) -> str:
        """curl localhost inside the host; return the body."""
        argv = ["curl", "-sS", "--fail-with-body", "-X", method, f"http://localhost:{port}{path}"]
        if data is not None:
            argv += ["--data-binary", "@-"]
        return self.exec(argv, input=data, check=check, timeout=60).stdout

    def wait_http(self, path: str = "/system", *, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            out = self.exec(["curl", "-sf", f"http://localhost:8042{path}"], check=False)
            if out.returncode == 0:
                return json.loads(out.stdout)
            if time.monotonic() > deadline:
                log = self.run("journalctl -u orthanc -n 8 --no-pager", check=False).stdout
                raise HostError(f"{path} did not answer in {timeout:.0f}s inside the host:\n{log}")
            time.sleep(0.2)

    def dpkg_version(self, package: str = "orthanc") -> tuple[str, str]:
        """(status abbreviation such as 'ii', version) of a package."""
        out = self.exec(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}|${Version}", package])
        abbrev, version = out.stdout.split("|")
        return abbrev.strip(), version

    def install_tool(self, wheels_inside: str = "/mnt/wh", *, timeout: float = 300) -> str:
        """Install the orchestrator from the bound wheels into /opt/orchestrator; return its bin.

        The first host of an image (per wheels folder, so per session) installs it with pip;
        the venv is kept beside the wheels and later hosts of that image get a copy (same
        python, same paths): pip's few seconds once per image, not once per host.
        """
        wheels = next((src for src, dst in self.binds.items() if dst == wheels_inside), None)
        key = (str(self.image_root), str(wheels))
        venv = self.path("/opt/orchestrator")
        kept = _TOOLS.get(key)
        if kept is not None and kept.is_dir():
            _sh(["cp", "-a", str(kept), str(venv)], timeout=timeout)
            return "/opt/orchestrator/bin"
        self.run("python3 -m venv /opt/orchestrator && /opt/orchestrator/bin/pip install -q "
                 f"--no-index --find-links {wheels_inside} orchestrator", timeout=timeout)
        if wheels is not None:
            keep = Path(wheels).parent / f"venv-{self.image_root.name}"
            shutil.rmtree(keep, ignore_errors=True)
            _sh(["cp", "-a", str(venv), str(keep)], timeout=timeout)
            _TOOLS[key] = keep
        return "/opt/orchestrator/bin"


def sweep_stale_hosts() -> list[Path]:
    """Unmount and delete the hosts a killed test run left (their nspawn is gone)."""
    swept = []
    for d in sorted((IMAGE_DIR / "hosts").glob("*/nspawn.pid")):
        pid = int(d.read_text() or 0)
        try:
            if pid and "nspawn" in Path(f"/proc/{pid}/comm").read_text():
                continue  # still running: another session's host
        except OSError:
            pass
        host = d.parent
        subprocess.run(["umount", "-l", str(host / "merged")], capture_output=True)
        shutil.rmtree(host, ignore_errors=True)
        swept.append(host)
    return swept


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


# -- the tool's wheels ----------------------------------------------------------------------------
def build_wheels(checkout: Path, dest: Path, *, python_version: str = "3.11") -> Path:
    """Wheels of the checkout (tracked and new files, as they are now) and of its dependencies."""
    dest.mkdir(parents=True, exist_ok=True)
    src = Path(tempfile.mkdtemp(prefix="src-", dir=dest.parent))
    try:
        files = subprocess.run(["git", "-C", str(checkout), "ls-files", "-co", "--exclude-standard",
                                "-z"], capture_output=True, check=True).stdout.decode().split("\0")
        for rel in filter(None, files):
            p = checkout / rel
            if p.is_file():
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, src / rel)
        pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
        _sh(pip + ["wheel", "--no-deps", "-w", str(dest), str(src)], timeout=600)
        deps = tomllib.loads((src / "pyproject.toml").read_text())["project"]["dependencies"]
        _sh(pip + ["download", "-d", str(dest), "--only-binary=:all:", "--python-version",
                   python_version, "--implementation", "cp", "--platform", "manylinux2014_x86_64",
                   "--platform", "manylinux_2_17_x86_64", "--platform", "any", *deps], timeout=600)
    finally:
        shutil.rmtree(src, ignore_errors=True)
    return dest


def unavailable_reason() -> str | None:
    """Why hosts cannot be built or booted here (None when they can)."""
    if os.geteuid() != 0:
        return "booting Debian hosts needs root (CI runs as root)"
    for tool in ("mmdebstrap", "systemd-nspawn", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install mmdebstrap systemd-container)"
    return None
