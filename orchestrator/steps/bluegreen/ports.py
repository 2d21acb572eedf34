"""The `ports` way to switch: on one host, the new server takes the old server's ports.

Clients keep their address (host, HTTP port, DICOM port); only the process behind
it changes. The new server's configuration gets the old server's `HttpPort` (and
`DicomPort` when the old server's DICOM server is on), in the file that sets each
key, or right after the opening brace of a single file, or in a file of our own
in a configuration folder (Orthanc refuses a key set in two files of a folder).
Every file's original bytes are kept in the run's folder first; giving the ports
back writes them back (or removes our own file). Both are safe to repeat.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import RefusedError
from orchestrator.host.host import Host
from orchestrator.orthanc.config import OrthancConfig
from orchestrator.orthanc.config_edit import set_int_value
from orchestrator.steps.record import Record

OWN_FILE = "zz-orchestrator-ports.json"
ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}


@dataclass(frozen=True, kw_only=True)
class NewService(Record):
    """The new server as a service of this host: who stops and starts it."""

    name: str
    config: Path
    binary: Path = Path("/usr/sbin/Orthanc")
    manager: str = "auto"
    pidfile: Path | None = None
    log_file: Path | None = None
    user: str | None = None
    stop_grace: float = 30.0


@dataclass(frozen=True, kw_only=True)
class PortEdit(Record):
    """One file of the new server's configuration and the ports it is given."""

    file: Path
    ports: dict[str, int]  # key -> the old server's value
    backup: Path | None  # its bytes before the edit; None: the file is ours (added)


def ports_to_take(old: OrthancConfig, new: OrthancConfig) -> dict[str, int]:
    """The old server's ports the new one must take (those that differ)."""
    wanted = {"HttpPort": old.http_port}
    if old.dicom_enabled:
        if old.dicom_port is None:
            raise RefusedError(f"switch: {{how: ports}}: the old server's DicomPort (in "
                               f"{old.file_defining('DicomPort')}) is not a port number",
                               hint="fix it, or switch with {how: command}")
        wanted["DicomPort"] = old.dicom_port
    have = {"HttpPort": new.http_port, "DicomPort": new.dicom_port}
    return {key: value for key, value in wanted.items() if have[key] != value}


def plan_edits(new: OrthancConfig, ports: dict[str, int], folder: Path) -> tuple[PortEdit, ...]:
    """Which file of the new server's configuration gets which port, and its backup's name."""
    by_file: dict[Path, dict[str, int]] = {}
    for key, value in ports.items():
        file = new.file_defining(key)
        if file is None:
            file = new.path / OWN_FILE if new.path.is_dir() else new.path
        by_file.setdefault(Path(file), {})[key] = value
    return tuple(
        PortEdit(file=file, ports=keys,
                 backup=None if file.name == OWN_FILE
                 else folder / f"{i}-{file.name}")
        for i, (file, keys) in enumerate(by_file.items()))


def take(host: Host, edits: tuple[PortEdit, ...]) -> None:
    """Write the ports into the new server's configuration (its bytes kept first)."""
    for edit in edits:
        if edit.backup is None:
            text = "{\n}\n"
        else:
            original = host.files.read_bytes(edit.file)
            if not host.files.exists(edit.backup):  # a rerun keeps the first, true original
                host.files.make_dir(edit.backup.parent)
                host.files.write(edit.backup, original,
                                 f"keep a copy of {edit.file} as {edit.backup}")
            text = original.decode(**ENCODING)
        for key, value in edit.ports.items():
            text = set_int_value(text, key, value)
        said = ", ".join(f"{k} {v}" for k, v in edit.ports.items())
        host.files.write(edit.file, text.encode(**ENCODING),
                         f"write {said} into the new server's configuration {edit.file}")


def give_back(host: Host, edits: tuple[PortEdit, ...]) -> None:
    """Put the new server's configuration back as it was."""
    for edit in edits:
        if edit.backup is None:
            if host.files.exists(edit.file):
                host.files.remove([edit.file], f"remove {edit.file} (ours) from the new "
                                  "server's configuration")
        elif host.files.exists(edit.backup):
            host.files.write(edit.file, host.files.read_bytes(edit.backup),
                             f"put {edit.file} back as it was before the switch")
