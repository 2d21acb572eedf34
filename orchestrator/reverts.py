"""The `revert` use case: undo the last *finished* run, a day later, with nothing lost.

`revert(plan)` reads the journal's last run (it must have ended `done`), refuses
clearly when what it needs is gone (the old folder of a relocation, the snapshot,
the old package's .deb), then:

1. stops the new version and copies its index aside (`RUN/new-index`), and the DICOM
   files of every instance the old index lacks (`RUN/carry/`, checked by MD5): they
   arrived after the upgrade;
2. undoes the finished run's steps, newest first, as the journal recorded them (the
   package back to the old version with /etc/orthanc exactly, the configuration back
   to the old folder or the snapshot back, the old version started) - journaled as a
   new run of mode `revert`, so a crash is finished with `orchestrator rollback`;
3. stores the carried files into the old version over REST and checks each by MD5:
   "N instances received since the upgrade were carried back".

A blue/green move is reverted by its steps' own undo: the switch sends clients back
(or gives the ports back) and carries what the new server received since the switch
into the old server; the freeze's undo lifts the write freeze.

The new folder is never started again: relocate's undo moves it aside, and the old
binary only ever runs on the old folder or the snapshot. `dry_run` lists it all and
changes nothing (the count comes from the running new version's REST API).
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from orchestrator.engine import Engine, RunReport
from orchestrator.errors import OrchestratorError, OrthancHttpError, RefusedError
from orchestrator.journal import Event, RunHistory, RunOutcome, StepState
from orchestrator.orthanc import storage
from orchestrator.holding import Held, locked
from orchestrator.plan import Plan
from orchestrator.run_report import Outcome
from orchestrator.steps.healthy import PROBE_PATIENT
from orchestrator.steps.kind import StepKind
from orchestrator.steps.service import instances_listed
from orchestrator.steps.package import missing_way_back
from orchestrator.wiring import WiredRun, journal_for, open_run, state_dir_for

MODE = "revert"


def revert(plan: Plan, *, state_dir: Path | None = None, dry_run: bool = False,
           observe=None) -> RunReport:
    """Undo the service's last finished run and carry back what arrived since.

    Raises RefusedError (nothing changed) when there is no finished run to revert, or when
    the old folder, the snapshot or the old package's .deb is gone.
    """
    state = state_dir_for(plan, state_dir)
    with _held(plan, state, dry_run) as held:
        history = _finished_run(journal_for(state, plan.service.name).last_run())
        wired = open_run(plan, dry=dry_run, state_dir=state,
                         records={k: replace(v) for k, v in history.steps.items()},
                         specs=history.specs)
        _check_still_there(wired)
        carry = _Carry(wired, history)
        extra = {"observe": observe} if observe is not None else {}
        engine = Engine(wired.steps, wired.host, wired.journal, wired.ctx, mode=MODE,
                        plan_sha256=wired.plan_sha256, **extra)
        held.engine = engine  # SIGTERM during its undo is noted, not obeyed (as in rollback)
        _start_journal(wired, history)
        carry.collect()
        report = engine.rollback(replace(history, message=f"revert of run {history.run_id}"))
        report.notes.extend(carry.notes)
        if report.exit_code == 0:
            report.notes.append(carry.send())
            report.outcome = Outcome.PLANNED if dry_run else Outcome.DONE
            report.error = None
            report.notes.insert(0, f"reverted run {history.run_id}")
        return report


@contextmanager
def _held(plan: Plan, state: Path, dry_run: bool) -> Iterator[Held]:
    """A real revert holds the run's locks with signals interrupting (holding.locked); a dry
    one takes nothing."""
    if dry_run:
        yield Held([])
        return
    with locked(plan, state, MODE, None) as held:
        yield held


# -- refusals --------------------------------------------------------------------------------

def _finished_run(history: RunHistory | None) -> RunHistory:
    if history is None:
        raise RefusedError("no run recorded: nothing to revert",
                           hint="revert undoes the last finished `run` of this plan's service")
    if history.open:
        raise RefusedError(f"the last run {history.run_id} is unfinished",
                           hint="finish it first with `orchestrator rollback PLAN` (or resume)")
    if history.mode == MODE:
        raise RefusedError(f"the last run {history.run_id} is a revert already: nothing to revert",
                           hint="`orchestrator status PLAN` shows it")
    if history.outcome != RunOutcome.DONE:
        raise RefusedError(f"the last run {history.run_id} ended {history.outcome.value}: "
                           "nothing of it is in place", hint="revert undoes a finished run")
    return history


def _check_still_there(wired: WiredRun) -> None:
    """Refuse, before any change, when the way back lacks one of its pieces."""
    host, records = wired.host, wired.ctx.records
    for step in wired.steps:
        rec = records[step.id]
        if rec.state != StepState.DONE:
            continue
        intent = step.intent_of(rec)
        if step.kind == StepKind.RELOCATE and intent is not None:
            for old in {intent.storage, intent.index_dir}:
                if not host.files.exists(Path(old) / "index") and not host.files.is_dir(old):
                    raise RefusedError(f"the old folder {old} is gone: there is nothing to go "
                                       "back to", hint="restore it from a backup first")
        if step.kind == StepKind.SNAPSHOT and intent is not None and not intent.skipped:
            gone = step.holds(host, wired.ctx, rec)
            if gone:
                raise RefusedError(gone, hint="restore the snapshot from a backup first")
        if step.kind == StepKind.PACKAGE and intent is not None:
            gone = missing_way_back(host, intent)
            if gone:
                raise RefusedError(gone, hint="put the old .deb back in /var/cache/apt/archives "
                                              "first")


def _start_journal(wired: WiredRun, history: RunHistory) -> None:
    """A new run of mode `revert` whose steps are the finished run's, done as recorded: a
    crash leaves it open, and `rollback` finishes it like any run."""
    j = wired.journal
    j.append(Event.RUN_STARTED, run_id=wired.ctx.run_id, mode=MODE, plan=str(wired.plan.source),
             plan_sha256=wired.plan_sha256, service=wired.plan.service.name, pid=os.getpid(),
             host=socket.gethostname(), reverts=history.run_id, steps=history.specs)
    for rec in wired.ctx.records.values():
        if rec.state == StepState.DONE:
            j.append(Event.STEP_STARTED, step=rec.id, intent=rec.intent)
            j.append(Event.STEP_DONE, step=rec.id, facts=rec.facts, changes=rec.changes or [])


# -- the carry-back ----------------------------------------------------------------------------

class _Carry:
    """The instances the new version received that the old index lacks."""

    def __init__(self, wired: WiredRun, history: RunHistory):
        self.history = history
        self.host = wired.host
        self.ctx = wired.ctx
        self.wired = wired
        self.dir = Path(wired.ctx.run_dir) / "carry"
        self.files: list[tuple[str, str, Path]] = []  # instance id, MD5, file
        self.notes: list[str] = []
        self.count = 0

    @property
    def by_switch(self) -> bool:
        """A blue/green move: its switch's undo carries back what the new server received."""
        return any(step.kind == StepKind.SWITCH for step in self.wired.steps)

    def collect(self) -> None:
        if self.by_switch:
            return
        config = self.ctx.config()
        if config.index_backend != "sqlite":
            self._collect_over_rest(config.index_backend)
            return
        new_dir, storage_dir = Path(config.index_dir), Path(config.storage_dir)
        old_index = self._old_index()
        old = _instances(old_index) if old_index else set()
        if self.host.changes.dry:
            client = self.host.orthanc()
            try:
                now = set(client.get_json("/instances"))  # type: ignore[attr-defined]
            finally:
                client.close()
            self.count = len(now - old)
            self.host.changes.apply(f"stop the new version, copy its index to {self.dir.parent / 'new-index'} "
                                    f"and the {self.count} instances the old index lacks to "
                                    f"{self.dir}", lambda: None)
            return
        if self.host.service.status().running:
            self.host.service.stop(timeout=120)
        copy = self.dir.parent / "new-index"
        self.host.files.make_dir(copy, like=new_dir)
        names = [n for n in ("index", "index-wal") if self.host.files.exists(new_dir / n)]
        self.host.files.copy([(new_dir / n, copy / n) for n in names],
                             f"copy the new version's index to {copy}")
        self.dir.mkdir(parents=True, exist_ok=True)
        with storage.open_index(copy / "index") as con:
            for att in storage.attachments(con):
                if att.file_type != storage.FileType.DICOM or att.instance_id in old:
                    continue
                data = storage.read_attachment(storage_dir, att)
                md5 = hashlib.md5(data).hexdigest()
                if att.md5 and att.md5 != md5:
                    self.notes.append(f"instance {att.instance_id}: its file does not match its "
                                      "MD5: not carried back")
                    continue
                dest = self.dir / f"{att.instance_id}.dcm"
                dest.write_bytes(data)
                self.files.append((att.instance_id, md5, dest))

    def _collect_over_rest(self, backend: str) -> None:
        """A database index: the old version's instances are those the upgrade's stop listed;
        the running new version's others are read over REST (each checked by MD5)."""
        kept = f"the database the new version wrote is kept ({backend})"
        old = instances_listed(Path(self.ctx.run_dir).parent / self.history.run_id)
        if old is None:
            self.notes.append(f"nothing carried back: the instance IDs listed before the "
                              f"upgrade's stop are missing; {kept}")
            return
        client = self.host.orthanc()
        try:
            try:
                now = set(client.get_json("/instances"))  # type: ignore[attr-defined]
            except OrchestratorError as exc:
                self.notes.append(f"nothing carried back: the new version does not answer "
                                  f"({exc.message}); {kept}")
                return
            wanted = sorted(now - old - _probes(client))
            self.count = len(wanted)
            if self.host.changes.dry:
                self.host.changes.apply(f"copy the {self.count} instances the old version lacks "
                                        f"from the new version's REST API to {self.dir}",
                                        lambda: None)
                return
            self.dir.mkdir(parents=True, exist_ok=True)
            for instance in wanted:
                self._fetch(client, instance)
        finally:
            client.close()

    def _fetch(self, client, instance: str) -> None:
        try:
            data = client.request("GET", f"/instances/{instance}/file").content
            stored = client.request("GET", f"/instances/{instance}/attachments/dicom/md5",
                                    expect=(200, 404)).text.strip()
        except OrchestratorError as exc:
            self.notes.append(f"instance {instance}: not read from the new version "
                              f"({exc.message}): not carried back")
            return
        md5 = hashlib.md5(data).hexdigest()
        if stored and len(stored) == 32 and stored != md5:
            self.notes.append(f"instance {instance}: its file does not match its MD5: "
                              "not carried back")
            return
        dest = self.dir / f"{instance}.dcm"
        dest.write_bytes(data)
        self.files.append((instance, md5, dest))

    def _old_index(self) -> Path | None:
        """The index the old version will run on: the old folder, else the snapshot."""
        by_kind = {}
        for step in self.wired.steps:
            rec = self.ctx.records[step.id]
            if rec.state == StepState.DONE and step.kind in (StepKind.RELOCATE, StepKind.SNAPSHOT):
                by_kind[step.kind] = step.intent_of(rec)
        relocate = by_kind.get(StepKind.RELOCATE)
        if relocate is not None:
            return Path(relocate.index_dir) / "index"
        snap = by_kind.get(StepKind.SNAPSHOT)
        if snap is not None and snap.dir is not None:
            return Path(snap.dir) / "index"
        return None

    def send(self) -> str:
        if self.by_switch:
            return "what the new server received since the switch was carried back by its undo"
        if self.host.changes.dry:
            return f"{self.count} instances received since the upgrade would be carried back"
        client = self.host.orthanc()
        failures = []
        try:
            for instance, md5, path in self.files:
                try:
                    client.request("POST", "/instances", data=path.read_bytes(),  # type: ignore[attr-defined]
                                   headers={"Content-Type": "application/dicom"})
                    back = client.request("GET", f"/instances/{instance}/file").content  # type: ignore[attr-defined]
                except OrthancHttpError as exc:
                    failures.append(f"{instance}: {exc.message}")
                    continue
                if hashlib.md5(back).hexdigest() != md5:
                    failures.append(f"{instance}: MD5 differs after the import")
        finally:
            client.close()
        done = len(self.files) - len(failures)
        text = f"{done} instances received since the upgrade were carried back (verified by MD5)"
        if failures:
            text += (f"; {len(failures)} failed ({'; '.join(failures[:3])}): their files are in "
                     f"{self.dir}")
        return text


def _probes(client) -> set[str]:
    """The health check's store-probe instances (a crash may leave one): never carried."""
    patient = hashlib.sha1(PROBE_PATIENT.encode()).hexdigest()
    public = "-".join(patient[i:i + 8] for i in range(0, 40, 8))
    try:
        return set(client.get_json(f"/patients/{public}/instances?expand=false") or [])
    except OrchestratorError:
        return set()


def _instances(index: Path) -> set[str]:
    try:
        with storage.open_index(index) as con:
            return {str(r[0]) for r in con.execute("SELECT publicId FROM Resources "
                                                   "WHERE resourceType = 4")}
    except OrchestratorError:
        return set()
