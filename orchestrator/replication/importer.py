"""Send the DICOM files of an Orthanc storage folder to an Orthanc over REST.

With the stopped source's index (DIR/index, or --index) exactly the full-DICOM
attachments are sent (fileType 1), streamed per their row (sendfile for plain
files, checked against the row's MD5 first; inflated on the fly for
zlib-with-size, checked by zlib's checksum and the declared size before the
last byte goes out); the dicom-until-pixel-data attachments (fileType 3) and
JSON summaries (fileType 2) are skipped. Without an index, every file is
judged by its content (see orthanc/storage/dicom.py). The same pool, resume
state, report and exit code as `replicate`.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from orchestrator.errors import InputError, OrthancHttpError
from orchestrator.host.clock import Clock
from orchestrator.orthanc import storage
from orchestrator.orthanc.storage import (Attachment, Compression, FileType, Kind, StorageEntry,
                                          StorageFormatError)
from orchestrator.replication.bodies import FileBody, InflateBody
from orchestrator.replication.listing import is_instance_id
from orchestrator.replication.options import Options, PresenceMode
from orchestrator.replication.outcome import CopyOutcome, Result, Summary
from orchestrator.replication.pool import REAL_CLOCK, Done, Work, recording_pool
from orchestrator.replication.state import ResumeState, StateStore, Watermark
from orchestrator.replication.target import (Presence, connect, has_instance, limit_warnings,
                                             md5_of, store)
from orchestrator.replication.transport import Body, BodyError, Endpoint
from orchestrator.replication.writes import Write, Writes

NOT_DICOM = "not DICOM"
UNTIL_PIXEL_DATA = "dicom-until-pixel-data (a copy without pixels: never imported)"


def find_index(root: Path, options: Options) -> Path | None:
    if not options.use_index:
        return None
    if options.index is not None:
        return options.index
    candidate = root / storage.INDEX_FILE
    return candidate if candidate.is_file() else None


class StorageImport:
    """One run of `import-storage`."""

    def __init__(self, root: Path, target: Endpoint, store_: StateStore, options: Options,
                 writes: Writes, progress: Callable[[Summary, int | None], None] | None = None,
                 clock: Clock = REAL_CLOCK):
        if not root.is_dir():
            raise InputError(f"{root} is not a folder", hint="give the Orthanc storage folder")
        self.root, self.target, self.state_store, self.options = root, target, store_, options
        self.writes, self.clock = writes, clock
        self.progress = progress or (lambda summary, total: None)
        self.presence = Presence(options.presence if writes.learns_from_sends()
                                 else PresenceMode.ALWAYS)
        self.summary = Summary("import-storage", str(root), target.base_url, dry=writes.dry)
        self.total: int | None = None
        self.con: sqlite3.Connection | None = None
        self._verify_lock = threading.Lock()

    def run(self) -> Summary:
        started = self.clock.now()
        opts = self.options
        connect(self.target, "target", opts.policy)
        self.summary.notes.extend(limit_warnings(opts.target_config))
        index = find_index(self.root, opts)
        mode = "index" if index else "content"
        state = self.state_store.fresh() if opts.full else self.state_store.load()
        if state.extra.get("mode") != mode:
            state = self.state_store.fresh()
        state.extra["mode"] = mode
        # An unwritable state dir fails now, not mid-run.
        self.writes.apply(Write.SAVE_STATE, lambda: self.state_store.save(state), None)
        if opts.verify and state.cursor is not None:
            # Inline verification sees only what a run handles: check everything again.
            self.summary.notes.append("--verify: the whole folder is checked again, not "
                                      "resumed from the saved point")
            state.cursor, state.listed = None, 0
        if state.cursor is not None:
            self.summary.resumed_from = f"{'attachment row' if index else 'file'} {state.cursor}"
        if index is None:
            self.summary.notes.append("no index: DICOM files are recognised by their content")
            self._run(state, self._content_listing(state), self._import_file, self._file_for)
        else:
            self.summary.notes.append(f"reading the attachments listed in {index}")
            with storage.open_index(index) as con:
                self.con = con
                self._check_index_matches(con)
                self.total = con.execute("SELECT COUNT(*) FROM AttachedFiles WHERE fileType = ?",
                                         (int(FileType.DICOM),)).fetchone()[0]
                self._run(state, self._index_listing(state), self._import_attachment,
                          self._attachment_for)
        self.summary.elapsed = self.clock.now() - started
        return self.summary

    def _run(self, state: ResumeState, listing: Iterator[Work], work: Callable,
             lookup: Callable[[str], object | None]) -> None:
        main = Watermark(state.cursor, state.listed)
        pool = recording_pool(self, state, main, cursor_ok=lambda cursor: cursor is not None)
        before = dict(state.failures)
        state.failures.clear()
        retry = [Work(None, found) for found in map(lookup, before) if found is not None]
        aborted = pool.run(retry, work, Watermark())
        if aborted is not None:
            for item, reason in before.items():
                state.failures.setdefault(item, reason)
        else:
            aborted = pool.run(listing, work, main)
        self.summary.aborted = aborted

    # -- listings ---------------------------------------------------------------------
    def _content_listing(self, state: ResumeState) -> Iterator[Work]:
        after = state.cursor if isinstance(state.cursor, str) else None
        for entry in storage.walk(self.root, after):
            yield Work(entry.rel, entry)

    def _index_listing(self, state: ResumeState) -> Iterator[Work]:
        after = state.cursor if isinstance(state.cursor, int) else 0
        if not after:
            # The index files and anything else beside the xx/ folders: report, never send.
            for entry in storage.walk_top(self.root):
                yield Work(None, entry)
        assert self.con is not None
        for att in storage.attachments(self.con, after):
            # What is skipped by its row alone is recorded here, without a worker.
            skipped = _judge(att)
            if skipped is not None:
                yield Done(att.rowid, skipped, 1 if att.file_type == FileType.DICOM else 0)
            else:
                yield Work(att.rowid, att, 1)

    def _check_index_matches(self, con: sqlite3.Connection) -> None:
        sample = [a for _, a in zip(range(20), (a for a in storage.attachments(con)
                                                if a.file_type == FileType.DICOM))]
        if sample and not any(_exists(self.root, a.uuid) for a in sample):
            raise InputError(f"none of the first {len(sample)} files that the index lists is in "
                             f"{self.root}", hint="is this the storage folder of that index? "
                             "(give the right one, or --no-index to judge files by content)")

    def _file_for(self, rel: str) -> StorageEntry | None:
        path = self.root / rel
        return StorageEntry(rel, path) if ".." not in rel.split("/") else None

    def _attachment_for(self, rel: str) -> Attachment | None:
        uuid = rel.rsplit("/", 1)[-1]
        assert self.con is not None
        row = self.con.execute("SELECT rowid FROM AttachedFiles WHERE uuid = ?",
                               (uuid,)).fetchone()
        if row is None:
            return None
        return next(storage.attachments(self.con, row[0] - 1, batch=1), None)

    # -- one item -------------------------------------------------------------------
    def _import_file(self, entry: StorageEntry) -> Result:
        if entry.problem:
            return Result(CopyOutcome.SKIPPED, entry.rel, entry.problem)
        try:
            kind, dicom = storage.classify(storage.read_file(entry.path, self.options.max_size),
                                           self.options.max_size)
        except StorageFormatError as exc:
            return Result(CopyOutcome.FAILED, entry.rel, f"{entry.rel}: {exc}")
        if kind is Kind.NOT_DICOM:
            return Result(CopyOutcome.SKIPPED, entry.rel, NOT_DICOM)
        if kind is Kind.UNTIL_PIXEL_DATA:
            return Result(CopyOutcome.SKIPPED, entry.rel, UNTIL_PIXEL_DATA)
        return self.writes.apply(
            Write.SEND, lambda: self._send(entry.rel, dicom, None, hashlib.md5(dicom).hexdigest()
                                           if self.options.verify else None),
            Result(CopyOutcome.WOULD_COPY, entry.rel))

    def _import_attachment(self, item: Attachment | StorageEntry) -> Result:
        if isinstance(item, StorageEntry):  # a file beside the xx/ folders
            return Result(CopyOutcome.SKIPPED, item.rel, item.problem or NOT_DICOM)
        att = item
        rel = _rel(att)
        judged = _judge(att)
        if judged is not None:
            return judged
        if self.presence.should_ask():
            lookup = has_instance(self.target, att.instance_id, self.options.policy, self.clock)
            if lookup.present is None:
                return Result(CopyOutcome.FAILED, rel, lookup.reason, status=lookup.status)
            self.presence.record(lookup.present)
            if lookup.present:
                present = Result(CopyOutcome.PRESENT, rel, instance_id=att.instance_id)
                if self.options.verify:
                    return self.writes.check(lambda: self._verify_present(rel, att), present)
                return present
        return self.writes.apply(Write.SEND, lambda: self._send_attachment(rel, att),
                                 Result(CopyOutcome.WOULD_COPY, rel, instance_id=att.instance_id))

    def _send_attachment(self, rel: str, att: Attachment) -> Result:
        """Stream one attachment to the target, checked against its row on the way."""
        opts = self.options
        try:
            path = storage.attachment_path(self.root, att.uuid)
            body: Body
            if att.compression == Compression.ZLIB_WITH_SIZE:
                body = InflateBody(path, opts.max_size, att.size, want_md5=opts.verify)
            elif att.compression == Compression.NONE:
                body = FileBody(path, opts.max_size, att.size, att.md5, want_md5=opts.verify)
            else:
                raise StorageFormatError(f"unknown compressionType {att.compression}")
        except StorageFormatError as exc:
            return Result(CopyOutcome.FAILED, rel, f"{rel}: {exc}")
        with body:
            return self._send(rel, body, att.instance_id, None)

    def _send(self, rel: str, body: bytes | Body, expected: str | None,
              local_md5: str | None) -> Result:
        try:
            stored = store(self.target, body, expected, self.options.policy, self.clock)
        except BodyError as exc:
            return Result(CopyOutcome.FAILED, rel, f"{rel}: {exc.cause}")
        if stored.outcome is CopyOutcome.PRESENT:
            self.presence.record(True)
        size = len(body) if isinstance(body, bytes) else body.length
        result = Result(stored.outcome, rel, stored.reason and f"{rel}: {stored.reason}",
                        size=size, instance_id=stored.instance_id, status=stored.status)
        if self.options.verify and result.outcome in (CopyOutcome.COPIED, CopyOutcome.PRESENT):
            md5 = local_md5 or getattr(body, "md5", None)
            return self._verify(result, md5 or "")
        return result

    def _verify_present(self, rel: str, att: Attachment) -> Result:
        expected = att.md5.lower()
        if not expected:
            try:
                expected = hashlib.md5(storage.read_attachment(self.root, att,
                                                               self.options.max_size)).hexdigest()
            except StorageFormatError as exc:
                return Result(CopyOutcome.FAILED, rel, f"{rel}: {exc}")
        return self._verify(Result(CopyOutcome.PRESENT, rel, instance_id=att.instance_id), expected)

    def _verify(self, result: Result, local_md5: str) -> Result:
        """Compare the target's MD5 of the instance with the storage file's (inline --verify)."""
        try:
            remote, how = md5_of(self.target, result.instance_id, self.options.policy)
        except OrthancHttpError as exc:
            remote, how = None, f"error: {exc.message}"
        with self._verify_lock:
            report = self.summary.verify = self.summary.verify or {
                "ok": True, "checked": 0, "equal": 0, "different": 0, "hashed": 0, "notes": []}
            report["checked"] += 1
            if how == "hashed" and not report["hashed"]:
                report["notes"].append("the target does not store MD5s "
                                       "(StoreMD5ForAttachments off): its files were hashed")
            report["hashed"] += how == "hashed"
            if remote == local_md5:
                report["equal"] += 1
                return result
            report["ok"] = False
            report["different"] += 1
        if how.startswith("error"):
            return Result(CopyOutcome.FAILED, result.item, f"{result.item}: verify: {how[7:]}")
        return Result(CopyOutcome.FAILED, result.item,
                      f"{result.item}: verify: MD5 {remote or 'missing'} on the target, "
                      f"{local_md5} in the storage folder")


def _rel(att: Attachment) -> str:
    return f"{att.uuid[0:2]}/{att.uuid[2:4]}/{att.uuid}"


def _judge(att: Attachment) -> Result | None:
    """The result of an attachment that its row alone settles (skipped, or no instance)."""
    if att.file_type == FileType.DICOM_UNTIL_PIXEL_DATA:
        return Result(CopyOutcome.SKIPPED, _rel(att), UNTIL_PIXEL_DATA)
    if att.file_type != FileType.DICOM:
        return Result(CopyOutcome.SKIPPED, _rel(att), NOT_DICOM)
    if not is_instance_id(att.instance_id):
        return Result(CopyOutcome.FAILED, _rel(att), f"{_rel(att)}: the index ties it to no instance")
    return None


def _exists(root: Path, uuid: str) -> bool:
    try:
        return os.path.lexists(storage.attachment_path(root, uuid))
    except StorageFormatError:
        return False
