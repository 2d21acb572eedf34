"""The package port: read and change Debian packages with apt and dpkg.

Reads (dpkg state, apt's versions, the apt cache) always run for real, in a
dry run too; changes go through `Changes`. Parsing lives in `host/apt_text.py`.
Every apt call is non-interactive and keeps the admin's conffiles
(`--force-confdef --force-confold`); an install holds the package's restart
back (policy-rc.d exits 101; an admin's own one is put back byte for byte) and
is verified with dpkg-query: a package left half-way fails it even at rc 0.

A package step uses it in this order. Staging, service running: `check_settled`,
`check_version`, `simulate`, `download`, `ensure_debs(rollback_pairs(moves))`.
After the stop: `states()` (kept), `save_tree(/etc/orthanc, RUN/etc-orthanc)`,
`install(release, specs, log=RUN/apt.log)`. Undo: `repair()` (may raise while
the new package still fails), `install(old_release, rollback_specs(before,
states(), names))`, `restore_tree(...)`, `reset_failed(unit)`.

A change waits up to `lock_wait` seconds for apt's and dpkg's lock (an apt left
running by a killed run finishes its work alone): apt through
`-o DPkg::Lock::Timeout`, `dpkg --configure -a` (which has no such option) by
asking the kernel who holds the lock (F_GETLK) before it runs.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import CommandError, Completed
from orchestrator.host import apt_text, dpkg_lock
from orchestrator.host.apt_text import AptFailure, Move, PackageState, PlannedMove, Policy
from orchestrator.host.changes import Changes
from orchestrator.host.dpkg_lock import DPKG_LOCKS
from orchestrator.host.package_errors import (  # noqa: F401 - the port's errors, named here too
    AptLockedError, DebMissingError, DiskFullError, HalfConfiguredError, NoNetworkError,
    PackageError, UnknownVersionError, apt_error, listing, lock_error)
from orchestrator.host.runner import Runner
from orchestrator.host.tree import copy_tree, restore_tree, write_file_as

APT_CACHE = Path("/var/cache/apt/archives")
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
HOLD_SCRIPT = b"#!/bin/sh\n# written by orchestrator: hold package restarts back\nexit 101\n"
ENV = {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C", "APT_LISTCHANGES_FRONTEND": "none"}
KEEP_CONFFILES = ("-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold")
APT_TIMEOUT = 1800.0
READ_TIMEOUT = 60.0
LOCK_WAIT = 300.0  # seconds a change waits for another apt/dpkg to let go of the lock


@dataclass(frozen=True)
class SavedPolicy:
    """An admin's policy-rc.d as found (None: there was none)."""

    content: bytes | None
    mode: int = 0o755
    uid: int = 0
    gid: int = 0


class Packages:
    """apt and dpkg on this machine: reads real, changes through `changes`."""

    def __init__(self, runner: Runner, changes: Changes, *, cache: Path = APT_CACHE,
                 policy_rc_d: Path = POLICY_RC_D, lock_wait: float = LOCK_WAIT,
                 dpkg_locks: Sequence[Path] = DPKG_LOCKS):
        self.runner = runner
        self.changes = changes
        self.cache = Path(cache)
        self.policy_rc_d = Path(policy_rc_d)
        self.lock_wait = lock_wait
        self.dpkg_locks = tuple(Path(p) for p in dpkg_locks)
        self._arch: str | None = None

    def _wait_lock(self) -> tuple[str, ...]:
        """apt's option to wait for the dpkg lock (apt >= 1.9.11) instead of failing at once."""
        return ("-o", f"DPkg::Lock::Timeout={int(self.lock_wait)}")

    # -- reads -------------------------------------------------------------------------------
    def states(self, names: Sequence[str] = ()) -> dict[str, PackageState]:
        """dpkg's record of `names` (every package dpkg knows when empty)."""
        done = self.runner.run(["dpkg-query", "-W", "-f", apt_text.DPKG_QUERY_FORMAT, *names],
                               timeout=READ_TIMEOUT, check=False, env=ENV)
        return apt_text.parse_dpkg_query(done.stdout)

    def state(self, name: str) -> PackageState | None:
        return self.states([name]).get(name)

    def unsettled(self) -> list[PackageState]:
        """Packages dpkg left half-way (iU, iF, ...): `dpkg --configure -a` is due."""
        return [s for s in self.states().values() if not s.settled]

    def check_settled(self) -> None:
        """Refuse to start when dpkg was left half-way (before any change)."""
        left = self.unsettled()
        if left:
            raise HalfConfiguredError(
                "dpkg was left half-way: " + listing(left),
                hint="finish it first with `dpkg --configure -a` (or roll back)", states=left)

    def policy(self, name: str) -> Policy:
        """`apt-cache policy NAME`: the installed, candidate and known versions."""
        done = self.runner.run(["apt-cache", "policy", name], timeout=READ_TIMEOUT, env=ENV)
        if not done.stdout.strip():
            raise UnknownVersionError(f"apt knows no package {name!r}",
                                      hint="check the name, or run `apt-get update`")
        return apt_text.parse_apt_cache_policy(done.stdout)

    def candidate(self, name: str, release: str | None = None) -> str:
        """The version `apt-get install -t RELEASE NAME` would install; refuse when none."""
        pol = self.policy(name)
        found = pol.candidate_for(release)
        if found is None:
            raise UnknownVersionError(
                f"apt knows no {name} in release {release}; known: {_known(pol)}",
                hint="check the release name, or run `apt-get update`", known=pol.known())
        return found

    def check_version(self, name: str, version: str, release: str | None = None) -> None:
        """Refuse a version apt does not know (in `release`, when given), listing those it does."""
        pol = self.policy(name)
        offered = pol.in_release(release) if release else pol.known()
        if version not in offered:
            where = f" in {release}" if release else ""
            raise UnknownVersionError(f"apt knows no {name} {version}{where}; known: {_known(pol)}",
                                      hint="pick one of the known versions", known=pol.known())

    def simulate(self, release: str | None, specs: Sequence[str]) -> list[PlannedMove]:
        """What `apt-get install -t RELEASE SPECS` would do, package by package (`apt-get -s`)."""
        argv = ["apt-get", "install", "-s", "-q", *_target(release), *specs]
        done = self.runner.run(argv, timeout=APT_TIMEOUT, check=False, env=ENV)
        if done.returncode != 0:
            raise apt_error(done)
        return apt_text.parse_apt_simulation(done.stdout)

    def arch(self) -> str:
        """dpkg's native architecture (amd64, arm64, ...)."""
        if self._arch is None:
            self._arch = self.runner.run(["dpkg", "--print-architecture"],
                                         timeout=READ_TIMEOUT).stdout.strip()
        return self._arch

    def cached_deb(self, name: str, version: str) -> Path | None:
        """The .deb of NAME VERSION in the apt cache, if it is there."""
        for arch in (self.arch(), "all"):
            path = self.cache / apt_text.deb_filename(name, version, arch)
            if path.is_file():
                return path
        return None

    def saved_policy(self) -> SavedPolicy:
        """The policy-rc.d in place now (content, mode, owner), to put back later."""
        try:
            st = self.policy_rc_d.lstat()
            return SavedPolicy(self.policy_rc_d.read_bytes(), st.st_mode & 0o7777, st.st_uid,
                               st.st_gid)
        except FileNotFoundError:
            return SavedPolicy(None)

    # -- changes -----------------------------------------------------------------------------
    def download(self, release: str | None, specs: Sequence[str]) -> None:
        """Fetch NAME=VERSION packages (and what they pull in) into the apt cache; install nothing."""
        argv = ["apt-get", "install", "--download-only", "-y", "-q", *self._wait_lock(),
                *_target(release), *specs]
        self.changes.apply(f"download {' '.join(specs)} into the apt cache "
                           f"(`{shlex.join(argv)}`)", self._apt, argv)

    def ensure_deb(self, name: str, version: str) -> Path:
        """Make sure NAME VERSION's .deb is in the apt cache (for a rollback); return its path."""
        found = self.cached_deb(name, version)
        if found is not None:
            return found
        return self.changes.apply(
            f"download {name}={version} into {self.cache} (`apt-get download`)", self._fetch_deb,
            name, version, dry_result=self.cache / apt_text.deb_filename(name, version, self.arch()))

    def ensure_debs(self, pairs: Sequence[tuple[str, str]]) -> list[Path]:
        """`ensure_deb` for each (name, version)."""
        return [self.ensure_deb(name, version) for name, version in pairs]

    def install(self, release: str | None, specs: Sequence[str], *, log: Path) -> None:
        """Install NAME=VERSION packages with their restarts held back and conffiles kept.

        apt's output goes to `log`. Raise when apt fails or dpkg is left half-way.
        """
        argv = ["apt-get", "install", "-y", "-q", "--allow-downgrades", *KEEP_CONFFILES,
                *self._wait_lock(), *_target(release), *specs]
        with self.restarts_held():
            self.changes.apply(f"install {' '.join(specs)} (`{shlex.join(argv)}`), output to {log}",
                               self._install, argv, specs, Path(log))

    def repair(self) -> None:
        """Finish what an interrupted dpkg left (`dpkg --configure -a`), restarts held back."""
        argv = ["dpkg", "--configure", "-a", "--force-confdef", "--force-confold"]
        with self.restarts_held():
            self.changes.apply("repair dpkg (`dpkg --configure -a`)", self._repair, argv)

    def hold_restarts(self) -> SavedPolicy:
        """Put a policy-rc.d that exits 101 in place; return the admin's one to put back."""
        saved = self.saved_policy()
        self.changes.apply(f"hold package restarts back ({self.policy_rc_d} exits 101)",
                           write_file_as, self.policy_rc_d, HOLD_SCRIPT, 0o755, 0, 0)
        return saved

    def release_restarts(self, saved: SavedPolicy) -> None:
        """Put back the policy-rc.d as it was (remove ours when there was none)."""
        if saved.content is None:
            self.changes.apply(f"remove {self.policy_rc_d}", _remove, self.policy_rc_d)
        else:
            self.changes.apply(f"put the admin's {self.policy_rc_d} back", write_file_as,
                               self.policy_rc_d, saved.content, saved.mode, saved.uid, saved.gid)

    @contextmanager
    def restarts_held(self) -> Iterator[None]:
        saved = self.hold_restarts()
        try:
            yield
        finally:
            self.release_restarts(saved)

    def reset_failed(self, unit: str) -> None:
        """Clear systemd's start limit for `unit` (`systemctl reset-failed`)."""
        self.changes.apply(f"systemctl reset-failed {unit}", self.runner.run,
                           ["systemctl", "reset-failed", unit], timeout=READ_TIMEOUT, check=False)

    def save_tree(self, src: Path, dest: Path) -> None:
        """Copy folder `src` to a new `dest`: every file, folder and link, with modes and owners."""
        self.changes.apply(f"copy {src} to {dest} (modes and owners kept)", copy_tree,
                           Path(src), Path(dest))

    def restore_tree(self, saved: Path, target: Path) -> None:
        """Make `target` exactly `saved` again: same entries, bytes, modes, owners; nothing else."""
        self.changes.apply(f"restore {target} exactly from {saved}", restore_tree, Path(saved),
                           Path(target))

    # -- actions (run only through Changes) -----------------------------------------------------
    def _apt(self, argv: list[str], log: Path | None = None) -> Completed:
        done = self.runner.run(argv, timeout=APT_TIMEOUT + self.lock_wait, check=False, env=ENV)
        if log is not None:
            _write_log(log, done)
        if done.returncode != 0:
            raise apt_error(done, waited=self.lock_wait)
        return done

    def _fetch_deb(self, name: str, version: str) -> Path:
        try:
            self.runner.run(["apt-get", "download", "-q", f"{name}={version}"], timeout=APT_TIMEOUT,
                            env=ENV, cwd=str(self.cache))
        except CommandError as exc:
            raise DebMissingError(
                f"the .deb of {name} {version} is not in {self.cache} and cannot be downloaded: "
                f"{exc.completed.tail(1) if exc.completed else exc}",
                hint="restore network access, or put the .deb in the apt cache by hand",
                completed=exc.completed) from exc
        path = self.cached_deb(name, version)
        if path is None:
            raise DebMissingError(f"apt-get download left no .deb of {name} {version} in "
                                  f"{self.cache}", hint="put the .deb in the apt cache by hand")
        return path

    def _install(self, argv: list[str], specs: Sequence[str], log: Path) -> None:
        self._apt(argv, log)
        self._verify(specs)

    def _repair(self, argv: list[str]) -> None:
        deadline = time.monotonic() + self.lock_wait
        while True:
            holder = dpkg_lock.wait_unlocked(self.dpkg_locks, deadline)
            if holder is not None:
                raise lock_error(" ".join(argv[:2]), (holder, dpkg_lock.program(holder)),
                                 self.lock_wait)
            done = self.runner.run(argv, timeout=APT_TIMEOUT, check=False, env=ENV)
            if done.returncode == 0:
                break
            # Taken again between the look and dpkg's start: wait again, within the deadline.
            if apt_text.classify_apt_failure(done.stdout + done.stderr) is not AptFailure.LOCKED \
                    or time.monotonic() >= deadline:
                raise apt_error(done, waited=self.lock_wait)
            time.sleep(dpkg_lock.POLL)
        self._verify(())

    def _verify(self, specs: Sequence[str]) -> None:
        left = self.unsettled()
        if left:
            raise HalfConfiguredError(
                "dpkg left " + listing(left),
                hint="run the rollback, or `dpkg --configure -a` by hand", states=left)
        wanted = dict(s.split("=", 1) for s in specs if "=" in s)
        states = self.states(list(wanted)) if wanted else {}
        for name, version in wanted.items():
            got = states.get(name)
            if got is None or not got.installed or got.version != version:
                found = f"{got.version} ({got.abbrev})" if got else "nothing"
                raise PackageError(f"after the install dpkg records {name} {found}, not {version}",
                                   hint="see apt's log")


def rollback_pairs(moves: Sequence[PlannedMove]) -> list[tuple[str, str]]:
    """(name, version now) of every package an install would replace: their .debs must be at
    hand before it runs, for the way back."""
    return [(m.name, m.old) for m in moves if m.move is Move.REPLACE]


def rollback_specs(before: dict[str, PackageState], now: dict[str, PackageState],
                   names: Sequence[str]) -> list[str]:
    """NAME=VERSION to install to go back: `names` and every package dpkg left half-way, at the
    version they had `before`. Other moved packages stay (newer libraries are harmless, and
    putting back what apt removed would fight the replacements' Breaks)."""
    wanted = list(names) + sorted(n for n, s in now.items() if not s.settled and n not in names)
    specs = []
    for name in wanted:
        old = before.get(name)
        if old is not None and old.installed:
            specs.append(f"{name}={old.version}")
    return specs


def _target(release: str | None) -> list[str]:
    return ["-t", release] if release else []


def _known(pol: Policy) -> str:
    return ", ".join(f"{v.version} ({'/'.join(v.releases) or '?'})" for v in pol.versions) or "none"


def _write_log(log: Path, done: Completed) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ {shlex.join(done.argv)}\n{done.stdout}{done.stderr}[exit {done.returncode}]\n")


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
