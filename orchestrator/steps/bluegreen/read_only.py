"""The old server's configuration switched to read-only, and back: the `config` way to freeze.

A Lua script (Orthanc's `LuaScripts`) refuses every HTTP request but GET and HEAD
(`IncomingHttpRequestFilter`) and every instance received over DICOM
(`ReceivedInstanceFilter`); reads, C-FIND and C-MOVE go on. The script is
named by a configuration file of our own in a configuration folder, or by a key
inserted after the opening brace of a single configuration file, whose original
bytes are kept in the run's folder and written back by the undo. A
configuration that already names `LuaScripts` is refused (Orthanc would see
the key twice).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import RefusedError
from orchestrator.host.host import Host
from orchestrator.orthanc.config import OrthancConfig

LUA = """-- written by orchestrator (blue/green freeze): the old server is read-only
function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
  return method == 'GET' or method == 'HEAD'
end

function ReceivedInstanceFilter(dicom, origin, info)
  return false
end
"""
OWN_FILE = "zz-orchestrator-freeze.json"


@dataclass(frozen=True)
class Edit:
    """The file changed (or added) to freeze, and where its original bytes are kept."""

    file: Path
    backup: Path | None  # None: the file is ours, added to a folder

    def to_json(self) -> dict:
        return {"file": str(self.file), "backup": str(self.backup) if self.backup else None}

    @classmethod
    def from_json(cls, data: dict) -> Edit:
        backup = data.get("backup")
        return cls(Path(str(data["file"])), Path(str(backup)) if backup else None)


def check(config: OrthancConfig, host: Host) -> None:
    for file in config.files:
        if b'"LuaScripts"' in host.files.read_bytes(file):
            raise RefusedError(f"freeze: {{how: config}} cannot add its script: {file} already "
                               "names LuaScripts",
                               hint="use freeze: {how: command} or {how: stop} instead")


def freeze(config: OrthancConfig, host: Host, folder: Path) -> Edit:
    """Write the script into `folder` and make the configuration name it."""
    script = folder / "freeze.lua"
    host.files.make_dir(folder)
    host.files.write(script, LUA.encode(), "the read-only Lua script")
    key = f'"LuaScripts": ["{script}"]'
    if config.path.is_dir():
        own = config.path / OWN_FILE
        host.files.write(own, ("{ " + key + " }\n").encode(), "a configuration naming it")
        return Edit(own, None)
    original = host.files.read_bytes(config.path)
    brace = original.find(b"{")
    if brace < 0:
        raise RefusedError(f"{config.path}: no opening brace", hint="is this an Orthanc config?")
    backup = folder / "config-before-freeze.json"
    host.files.write(backup, original, "a copy of the configuration")
    edited = original[:brace + 1] + f"\n  {key},".encode() + original[brace + 1:]
    host.files.write(config.path, edited, "the configuration, naming the script")
    return Edit(config.path, backup)


def thaw(edit: Edit, host: Host) -> None:
    """Put the configuration back as it was."""
    if edit.backup is None:
        if host.files.exists(edit.file):
            host.files.remove([edit.file], "the freeze's configuration file")
    elif host.files.exists(edit.backup):
        host.files.write(edit.file, host.files.read_bytes(edit.backup),
                         "the configuration as it was before the freeze")
