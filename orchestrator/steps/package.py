"""install another version of the Orthanc package (and its plugins) while the service is stopped.

`package: {name: orthanc, version: "1.12.7+dfsg-4", release: trixie, with: [orthanc-postgresql]}`.
`release` becomes apt's `-t`; `with` lists plugin packages that move in lockstep to
that release's version.

Before the stop, `stage-package` (inserted by `steps.build`) downloads the new
packages and makes sure the .debs of the versions installed now are at hand
(the apt cache, else `apt-get download`): nothing of that goes into the downtime.
When the jump only adds packages besides Orthanc's own (new library versions,
installed side by side), it installs those ahead too, while the old version runs.
`check` refuses, before anything runs, a version apt does not know (listing
those it does), a dpkg left half-way, and a rollback whose .debs cannot be had.

After the stop the step copies `/etc/orthanc` (every file with mode and owner)
into the run's folder, records the SQLite index's schema, then installs with
the package's own restart held back (policy-rc.d exits 101; an admin's own one
is journaled in the intent and put back byte for byte), the admin's conffiles
kept, apt's output in the run's folder, and the result checked with dpkg-query
(a package left iU/iF fails the step even when apt exits 0).

Undo: put policy-rc.d back if a crash left ours, `dpkg --configure -a`, reinstall
the earlier versions of the moved packages and of every package dpkg left
half-way (never those apt removed), put `/etc/orthanc` back exactly, then
`systemctl reset-failed`. The index is not this step's to restore: if the new
binary altered its schema, undo says so, and relies on the snapshot or the
relocation before it (plan rules make one of them mandatory) to put the copy back.
"""

from __future__ import annotations

import base64
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import OrchestratorError, StepError
from orchestrator.host.apt_text import DpkgStatus, Move, PackageState, PlannedMove
from orchestrator.host.host import Host
from orchestrator.host.packages import (HOLD_SCRIPT, KEEP_CONFFILES, DebMissingError, PackageError,
                                        Packages, SavedPolicy, rollback_pairs, rollback_specs)
from orchestrator.host.tree import tree_differences
from orchestrator.journal import StepRecord, StepState
from orchestrator.orthanc import schema_fingerprint
from orchestrator.orthanc.index import index_is_locked
from orchestrator.steps.base import Needs, RunContext, StepBase, StepFacts, StepIntent, StepOptions
from orchestrator.steps.kind import StepKind, staged_id

CONFIG_DIR = Path("/etc/orthanc")


@dataclass(frozen=True, kw_only=True)
class PackageOptions(StepOptions):
    version: str
    name: str = "orthanc"
    release: str | None = None
    with_: tuple[str, ...] = field(default=(), metadata={"key": "with"})
    config_dir: Path | None = None  # /etc/orthanc


@dataclass(frozen=True, kw_only=True)
class PackageIntent(StepIntent):
    names: tuple[str, ...]
    specs: tuple[str, ...]  # NAME=VERSION, as apt gets them
    release: str | None = None
    old_release: str | None = None  # where the versions installed now come from
    before: dict[str, str] = field(default_factory=dict)  # every installed package's version
    config_dir: Path = CONFIG_DIR
    config_copy: Path
    log: Path
    policy: str | None = None  # the admin's policy-rc.d (base64), None: there was none
    policy_mode: int = 0o755
    policy_uid: int = 0
    policy_gid: int = 0
    index_dir: Path | None = None
    schema_before: dict[str, str] = field(default_factory=dict)
    unit: str | None = None  # systemd unit for reset-failed (None: not systemd)


@dataclass(frozen=True, kw_only=True)
class PackageFacts(StepFacts):
    installed: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class StageIntent(StepIntent):
    specs: tuple[str, ...]
    release: str | None = None


@dataclass(frozen=True, kw_only=True)
class StageFacts(StepFacts):
    moves: tuple[str, ...] = ()  # "orthanc 1.10.1+dfsg-2+deb12u1 -> 1.12.7+dfsg-4"
    rollback_debs: tuple[Path, ...] = ()
    preinstalled: tuple[str, ...] = ()  # NAME=VERSION of new libraries installed ahead


def upstream(version: str) -> str:
    """The upstream part of a Debian version: "1:1.12.7+dfsg-4" -> "1.12.7"."""
    v = version.split(":", 1)[-1]
    for sep in ("+", "~", "-"):
        v = v.split(sep, 1)[0]
    return v


def target_specs(pk: Packages, options: PackageOptions) -> list[str]:
    """NAME=VERSION for the package and its plugins; refuses a version apt does not know."""
    pk.check_version(options.name, options.version, options.release)
    return [f"{options.name}={options.version}"] + [f"{w}={pk.candidate(w, options.release)}" for w in options.with_]


def apt_install_argv(release: str | None, specs: list[str] | tuple[str, ...]) -> list[str]:
    """The install command as the port runs it (for plan's display)."""
    return ["apt-get", "install", "-y", "-q", "--allow-downgrades", *KEEP_CONFFILES,
            *(["-t", release] if release else []), *specs]


def _specs_of(ctx: RunContext, step_id: str, pk: Packages, options: PackageOptions) -> list[str]:
    cached = ctx.cache.get((step_id, "specs"))
    if isinstance(cached, list):
        return cached
    specs = target_specs(pk, options)
    ctx.cache[(step_id, "specs")] = specs
    return specs


class Package(StepBase[PackageOptions, PackageIntent, PackageFacts]):
    kind = StepKind.PACKAGE
    Options = PackageOptions
    Intent = PackageIntent
    Facts = PackageFacts
    staged_by = StepKind.STAGE_PACKAGE

    def describe(self) -> str:
        o = self.options
        what = " ".join([f"{o.name}={o.version}", *o.with_])
        where = f" from {o.release}" if o.release else ""
        return f"install {what}{where} (restart held back, {o.config_dir or CONFIG_DIR} kept exactly)"

    def needs(self, ctx: RunContext) -> Needs:
        return Needs(binary_after=upstream(self.options.version))

    def check(self, host: Host, ctx: RunContext) -> list[str]:
        pk = Packages(host.runner, host.changes)
        pk.check_settled()
        now = pk.state(self.options.name)
        if now is None or not now.installed:
            raise StepError(f"{self.options.name} is not installed by dpkg here",
                            hint="the package step moves an installed package; drop it or "
                                 "install the package first")
        specs = _specs_of(ctx, self.id, pk, self.options)
        for name in [self.options.name, *self.options.with_]:
            have = pk.state(name)
            if have is not None and have.installed and pk.cached_deb(name, have.version) is None \
                    and have.version not in _downloadable(pk, name):
                raise DebMissingError(
                    f"the .deb of {name} {have.version} (installed now) is not in {pk.cache} and "
                    "apt knows no source for it: a rollback could not reinstall it",
                    hint=f"put {name}_{have.version}_*.deb in {pk.cache}, or add the release "
                         "that ships it to apt's sources")
        new = specs[0].split("=", 1)[1]
        return [] if new != now.version else [f"{self.options.name} {new} is installed already"]

    def intend(self, host: Host, ctx: RunContext) -> PackageIntent:
        pk = Packages(host.runner, host.changes)
        specs = _specs_of(ctx, self.id, pk, self.options)
        names = tuple(s.split("=", 1)[0] for s in specs)
        before = {n: s.version for n, s in pk.states().items() if s.installed}
        saved = pk.saved_policy()
        if saved.content == HOLD_SCRIPT:  # ours, left by a crash: there is no admin's one
            saved = SavedPolicy(None)
        index_dir, schema = _index_schema(ctx)
        return PackageIntent(
            names=names, specs=tuple(specs), release=self.options.release,
            old_release=_release_of(pk, self.options.name, before.get(self.options.name)),
            before=before, config_dir=self.options.config_dir or CONFIG_DIR,
            config_copy=Path(ctx.run_dir) / f"{self.id}-etc", log=Path(ctx.run_dir) / f"{self.id}-apt.log",
            policy=base64.b64encode(saved.content).decode() if saved.content is not None else None,
            policy_mode=saved.mode, policy_uid=saved.uid, policy_gid=saved.gid,
            index_dir=index_dir, schema_before=schema,
            unit=ctx.plan.service.name if host.service.kind == "systemd" else None)

    def apply(self, host: Host, ctx: RunContext, intent: PackageIntent) -> PackageFacts:
        pk = Packages(host.runner, host.changes)
        if not host.files.exists(intent.config_copy):
            pk.save_tree(intent.config_dir, intent.config_copy)
        pk.install(intent.release, intent.specs, log=intent.log)
        installed = {s.split("=", 1)[0]: s.split("=", 1)[1] for s in intent.specs}
        moved = ", ".join(f"{n} {intent.before.get(n, '(none)')} -> {v}" for n, v in installed.items())
        return PackageFacts(installed=installed,
                            summary=f"{moved} (restart held back; apt's output in {intent.log})")

    def verify(self, host: Host, ctx: RunContext, intent: PackageIntent,
               facts: PackageFacts) -> PackageFacts:
        wrong = _not_at(Packages(host.runner, host.changes), facts.installed)
        if wrong:
            raise StepError(f"after the install dpkg records {wrong}", hint=f"see {intent.log}")
        ctx.forget_config()
        try:  # a kept (edited) conffile beside a new one can define a key twice
            ctx.config()
        except OrchestratorError as exc:
            raise StepError(f"the new package leaves a configuration Orthanc refuses: "
                            f"{exc.message}",
                            hint=f"your edited conffiles were kept (--force-confold) beside the "
                                 f"package's new ones; merge your edits into the new version "
                                 f"(its files are in the .deb; dpkg left *.dpkg-dist in "
                                 f"{intent.config_dir}), then run again") from None
        return facts

    def undo(self, host: Host, ctx: RunContext, record: StepRecord) -> str:
        intent = self.intent_of(record)
        if intent is None:
            return "nothing to undo"
        pk = Packages(host.runner, host.changes)
        done: list[str] = []
        if host.files.exists(pk.policy_rc_d) and pk.saved_policy().content == HOLD_SCRIPT:
            pk.release_restarts(_admin_policy(intent))  # a crash left ours in place
            done.append("policy-rc.d put back")
        if pk.unsettled():
            try:
                pk.repair()
                done.append("dpkg repaired")
            except PackageError as exc:
                done.append(f"dpkg --configure -a failed ({exc.message}); reinstalling")
        before = {n: PackageState(n, "ii", DpkgStatus.INSTALLED, v) for n, v in intent.before.items()}
        now = pk.states()
        specs = [s for s in rollback_specs(before, now, intent.names)
                 if not _is_at(now.get(s.split("=", 1)[0]), s.split("=", 1)[1])]
        if specs:
            pk.install(intent.old_release, specs,
                       log=intent.log.with_name(intent.log.stem + "-undo.log"))
            done.append("reinstalled " + ", ".join(specs))
        if host.files.exists(intent.config_copy):
            if tree_differences(intent.config_copy, intent.config_dir):
                pk.restore_tree(intent.config_copy, intent.config_dir)
                done.append(f"{intent.config_dir} restored exactly")
        if intent.unit:
            pk.reset_failed(intent.unit)
        note = self.index_note(ctx, intent)
        return "; ".join(done + ([note] if note else [])) or "nothing to undo"

    def index_note(self, ctx: RunContext, intent: PackageIntent) -> str | None:
        """What the new binary did to the index, and how the way back avoids it; refuses when
        nothing before this step will put a copy back."""
        altered = index_changes(intent)
        if altered is None:
            return None
        copies = [r for r in ctx.records.values()
                  if r.kind in (StepKind.SNAPSHOT, StepKind.RELOCATE)
                  and r.state in (StepState.DONE, StepState.FAILED, StepState.UNDOING)]
        if not copies:
            raise StepError(f"{altered}; no snapshot or relocation holds the index as it was",
                            hint="do not start the old binary on this index: every store would "
                                 "fail; restore the index from a backup first")
        how = "the snapshot is put back" if copies[-1].kind == StepKind.SNAPSHOT else \
            "the configuration points back to the old folder"
        return f"{altered}; the old binary is not started on it: {how}"

    def holds(self, host: Host, ctx: RunContext, record: StepRecord) -> str | None:
        facts = self.facts_of(record)
        if facts is None:
            return None
        wrong = _not_at(Packages(host.runner, host.changes), facts.installed)
        return f"dpkg records {wrong}" if wrong else None

    def manual_undo(self, ctx: RunContext, record: StepRecord) -> str:
        intent = self.intent_of(record)
        if intent is None:
            return "nothing to do by hand"
        back = [f"{n}={intent.before[n]}" for n in intent.names if n in intent.before]
        argv = apt_install_argv(intent.old_release, back)
        return (f"with the service stopped: `dpkg --configure -a`; `{shlex.join(argv)}`; make "
                f"{intent.config_dir} exactly {intent.config_copy} again (`rsync -a --delete "
                f"{intent.config_copy}/ {intent.config_dir}/`); remove /usr/sbin/policy-rc.d if "
                f"it only says 'exit 101' and was not yours; `systemctl reset-failed "
                f"{intent.unit or ctx.plan.service.name}`")


class StagePackage(StepBase[PackageOptions, StageIntent, StageFacts]):
    """Download the new packages and make sure the installed versions' .debs are at hand,
    while the service still runs."""

    kind = StepKind.STAGE_PACKAGE
    Options = PackageOptions
    Intent = StageIntent
    Facts = StageFacts

    def describe(self) -> str:
        return "download the packages and keep the installed versions' .debs (before the stop)"

    def intend(self, host: Host, ctx: RunContext) -> StageIntent:
        pk = Packages(host.runner, host.changes)
        return StageIntent(specs=tuple(_specs_of(ctx, staged_id(self.id), pk,
                                                 self.options)), release=self.options.release)

    def apply(self, host: Host, ctx: RunContext, intent: StageIntent) -> StageFacts:
        pk = Packages(host.runner, host.changes)
        pk.check_settled()
        moves = pk.simulate(intent.release, intent.specs)
        pk.download(intent.release, intent.specs)
        debs = pk.ensure_debs(rollback_pairs(moves))
        texts = tuple(f"{m.name} {m.old or '(new)'} -> {m.new or '(removed)'}" for m in moves)
        early = self._preinstall(pk, ctx, intent, moves)
        return StageFacts(moves=texts, rollback_debs=tuple(p for p in debs if p is not None),
                          preinstalled=tuple(early),
                          summary=f"{len(moves)} packages downloaded; the .debs to go back are "
                                  f"at hand ({len(debs)})" + (
                                      f"; {len(early)} new libraries installed ahead"
                                      if early else ""))

    def _preinstall(self, pk: Packages, ctx: RunContext, intent: StageIntent,
                    moves: list[PlannedMove]) -> list[str]:
        """Install ahead, while the old version runs, the packages the jump adds (new
        libraries, side by side with the old ones), so that less is left for the downtime.
        Only when apt would then add packages and replace or remove none; never Orthanc's."""
        names = {s.split("=", 1)[0] for s in intent.specs}
        fresh = [f"{m.name}={m.new}" for m in moves if m.move is Move.NEW
                 and m.name not in names and not m.name.startswith("orthanc")]
        if not fresh or any(m.move is not Move.NEW for m in pk.simulate(intent.release, fresh)):
            return []
        pk.install(intent.release, fresh, log=Path(ctx.run_dir) / f"{self.id}-apt.log")
        return fresh

    def undo(self, host: Host, ctx: RunContext, record: StepRecord) -> str:
        facts = self.facts_of(record)
        kept = f"; the {len(facts.preinstalled)} libraries installed ahead stay (harmless)" \
            if facts is not None and facts.preinstalled else ""
        return "nothing to undo (the downloaded .debs stay in the apt cache)" + kept


def missing_way_back(host: Host, intent: PackageIntent) -> str | None:
    """Why the versions installed before this step cannot be reinstalled now (their .deb is
    not cached and `apt-get download` cannot fetch it), or None; fetches a missing one."""
    pk = Packages(host.runner, host.changes)
    for name in intent.names:
        old = intent.before.get(name)
        if not old:
            continue
        try:
            pk.ensure_deb(name, old)
        except DebMissingError as exc:
            return f"the old package {name} {old} is gone: {exc.message}"
    return None


# -- helpers ------------------------------------------------------------------------------

def index_changes(intent: PackageIntent) -> str | None:
    """"1.13.0 altered the index: ..." for the index the new binary opened (read now, with the
    service stopped), or None when it is unchanged or cannot be read."""
    if intent.index_dir is None or not intent.schema_before:
        return None
    try:
        after = schema_fingerprint.read_fingerprint(intent.index_dir)
    except schema_fingerprint.FingerprintError:
        return None
    new = next((s.split("=", 1)[1] for s in intent.specs if s.startswith(intent.names[0] + "=")), "")
    return schema_fingerprint.describe(upstream(new) or "the new binary", intent.schema_before, after)


def _index_schema(ctx: RunContext) -> tuple[Path | None, dict[str, str]]:
    config = ctx.config()
    if config.index_backend != "sqlite":
        return None, {}
    index_dir = Path(config.index_dir)
    if index_is_locked(index_dir):  # still running (a dry run): read it after the stop only
        return index_dir, {}
    try:
        return index_dir, schema_fingerprint.read_fingerprint(index_dir)
    except schema_fingerprint.FingerprintError:
        return index_dir, {}


def _release_of(pk: Packages, name: str, version: str | None) -> str | None:
    if version is None:
        return None
    for entry in pk.policy(name).versions:
        if entry.version == version:
            return next((r for r in entry.releases if r != "now"), None)
    return None


def _downloadable(pk: Packages, name: str) -> list[str]:
    """Versions of `name` some apt source offers (not only dpkg's status)."""
    return [v.version for v in pk.policy(name).versions if any(r != "now" for r in v.releases)]


def _admin_policy(intent: PackageIntent) -> SavedPolicy:
    content = base64.b64decode(intent.policy) if intent.policy is not None else None
    return SavedPolicy(content, intent.policy_mode, intent.policy_uid, intent.policy_gid)


def _is_at(state: PackageState | None, version: str) -> bool:
    return state is not None and state.installed and state.version == version


def _not_at(pk: Packages, wanted: dict[str, str]) -> str:
    states = pk.states(list(wanted)) if wanted else {}
    return ", ".join(f"{n} {states[n].version} ({states[n].abbrev})" if n in states else f"no {n}"
                     for n, v in wanted.items() if not _is_at(states.get(n), v))
