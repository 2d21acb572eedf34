"""Read an Orthanc configuration exactly as Orthanc 1.10 does, and the values the tool needs.

The steps, in Orthanc's order (OrthancConfiguration.cpp, checked against 1.10.1):
1. The argument is a file, or a folder whose every `*.json` file (case-insensitive,
   hidden files too, not recursive) is read; the same top-level key in two files
   is fatal ("is defined in 2 different configuration files").
2. `${VAR}`, `${VAR:-default}`, `${VAR:-"default"}` and `${VAR:-'default'}` are
   substituted in the raw text, comments included, before parsing. An undefined
   variable becomes "" silently; a defined but empty one is used as is (the
   default is not taken); `${}` stops Orthanc with "Internal error".
3. The text is parsed by JsonCpp's rules (see jsonc.py); the root must be an object.
4. Relative paths resolve against the folder given, or the config file's folder.

Wrong types for the options read here stop Orthanc at start-up, so they are bad
input (exit 2) here too, named by file, line and column.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import InputError
from orchestrator.orthanc.config_files import ConfigSyntaxError, Source, config_files, read_file

# Index/storage plugins: their section and the backend name they provide.
BACKEND_SECTIONS = {"PostgreSQL": "postgresql", "MySQL": "mysql", "Odbc": "odbc"}
# Object-storage plugins take over storage whenever loaded with their section present.
OBJECT_STORAGE_SECTIONS = {"AwsS3Storage": ("aws-s3", "awss3"),
                           "GoogleCloudStorage": ("google-cloud", "googlecloud"),
                           "AzureBlobStorage": ("azure-blob", "azureblob")}
PLUGIN_SUFFIXES = (".so", ".dll", ".dylib")


@dataclass(frozen=True)
class OrthancConfig:
    """The effective configuration: merged values plus the facts the tool needs."""

    path: Path  # what was given (file or folder), absolute
    files: tuple[Path, ...]  # JSON files read, in order
    values: dict = field(repr=False)  # merged top-level values: holds secrets, never print whole
    warnings: tuple[str, ...]
    storage_dir: Path
    index_dir: Path
    compression: bool
    store_md5: bool
    index_backend: str  # "sqlite" | "postgresql" | "mysql" | "odbc"
    storage_backend: str  # "filesystem" | "postgresql" | "mysql" | "odbc" | "aws-s3" | ...
    http_port: int
    ssl: bool
    remote_access: bool
    auth_enabled: bool  # effective: AuthenticationEnabled, else on when remote access is on
    registered_users: tuple[str, ...]  # names only
    max_storage_size: int  # MB, 0 = unlimited
    max_patient_count: int  # 0 = unlimited
    plugins: tuple[str, ...]  # the Plugins entries, resolved
    http_enabled: bool = True
    dicom_port: int | None = 4242  # None: DicomPort is not a port number (only read if needed)
    dicom_enabled: bool = True  # DicomServerEnabled
    plugin_files: tuple[Path, ...] = ()  # shared libraries found in `plugins`
    disabled_backends: tuple[str, ...] = ()  # "PostgreSQL" or "PostgreSQL.EnableIndex" not exactly true
    max_storage_mode: str | None = None  # MaximumStorageMode (Orthanc >= 1.11.2), if set
    defined_in: dict = field(default_factory=dict, repr=False, compare=False)  # key -> Path

    def file_defining(self, key: str) -> Path | None:
        """Return the file that sets top-level `key`, or None when it is left at its default."""
        return self.defined_in.get(key)

    @property
    def local_url(self) -> str:
        """The URL of this Orthanc on the local host."""
        return f"{'https' if self.ssl else 'http'}://127.0.0.1:{self.http_port}"

    def to_dict(self) -> dict:
        """JSON-safe facts; user names but never passwords, no raw values."""
        keys = ("StorageDirectory", "IndexDirectory", "RegisteredUsers", "Plugins", "HttpPort")
        return {
            "path": str(self.path), "files": [str(f) for f in self.files],
            "storage_dir": str(self.storage_dir), "index_dir": str(self.index_dir),
            "index_backend": self.index_backend, "storage_backend": self.storage_backend,
            "compression": self.compression, "store_md5": self.store_md5,
            "http_enabled": self.http_enabled, "http_port": self.http_port, "ssl": self.ssl,
            "dicom_enabled": self.dicom_enabled, "dicom_port": self.dicom_port,
            "remote_access": self.remote_access, "auth_enabled": self.auth_enabled,
            "registered_users": list(self.registered_users), "local_url": self.local_url,
            "max_storage_size": self.max_storage_size, "max_patient_count": self.max_patient_count,
            "max_storage_mode": self.max_storage_mode,
            "plugins": list(self.plugins), "plugin_files": [str(p) for p in self.plugin_files],
            "disabled_backends": list(self.disabled_backends),
            "defined_in": {k: str(self.defined_in[k]) for k in keys if k in self.defined_in},
            "warnings": list(self.warnings),
        }


# -- loading --------------------------------------------------------------------------
def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> OrthancConfig:
    """Read a configuration file or folder as Orthanc does; InputError if Orthanc would refuse it."""
    env = os.environ if environ is None else environ
    given = Path(os.path.abspath(os.fspath(path)))
    files, base = config_files(given)
    warnings: list[str] = []
    merged: dict = {}
    origin: dict[str, tuple[Source, int]] = {}  # key -> (source, offset of its final value)
    for file in files:
        src = read_file(file, env, warnings)
        final = {m.key: m for m in src.doc.members}  # the last one of each key wins
        for key, member in final.items():
            if key in origin:
                other, other_offset = origin[key]
                raise InputError(
                    f"\"{key}\" is defined in both {other.place(other_offset)} and "
                    f"{src.place(member.key_offset)}",
                    hint="Orthanc refuses this (\"defined in 2 different configuration files\"): "
                         "keep the key in one file")
            origin[key] = (src, member.value_start)
        merged.update(src.doc.value)  # type: ignore[arg-type]
    return _Reader(merged, origin, base, warnings).build(given, files)


class _Reader:
    """Typed access to the merged values, with errors that name the place."""

    def __init__(self, values: dict, origin: dict, base: Path, warnings: list[str]):
        self.values = values
        self.origin = origin
        self.base = base
        self.warnings = warnings

    def place(self, key: str) -> str:
        src, offset = self.origin[key]
        return src.place(offset)

    def bad(self, key: str, expected: str, hint: str = "Orthanc refuses to start with it") -> InputError:
        value = self.values[key]
        src, offset = self.origin[key]
        line, col = src.where(offset)
        return ConfigSyntaxError(src.path, line, col,
                                 f"\"{key}\" must be {expected}, not {_json_type(value)}", hint)

    def boolean(self, key: str, default: bool) -> bool:
        if key not in self.values:
            return default
        if not isinstance(self.values[key], bool):
            raise self.bad(key, "true or false")
        return self.values[key]

    def string(self, key: str, default: str) -> str:
        if key not in self.values:
            return default
        value = self.values[key]
        if not isinstance(value, str):
            raise self.bad(key, "a string")
        return value

    def path(self, key: str, value: str) -> Path:
        if "\x00" in value:
            raise self.bad(key, "a path without NUL characters")
        if value.startswith("~"):
            self.warnings.append(f"{self.place(key)}: \"{key}\" starts with '~': Orthanc does not "
                                 f"expand it (it is a folder named '~' under {self.base})")
        # No normalisation: Orthanc joins the strings, and '..' after a symlink is not lexical.
        return self.base / value

    def port(self, key: str, default: int) -> int:
        value = self.values.get(key, default)
        if not _is_int(value):
            raise self.bad(key, "an integer")
        if not 1 <= value <= 65535:
            raise self.bad(key, "a port number from 1 to 65535",
                           "Orthanc fails or truncates it to 16 bits")
        return value

    def lenient_port(self, key: str, default: int) -> int | None:
        value = self.values.get(key, default)
        return value if _is_int(value) and 1 <= value <= 65535 else None

    def limit(self, key: str) -> int:
        value = self.values.get(key, 0)
        if _is_int(value) and 0 <= value < 2 ** 63:
            return value
        self.warnings.append(f"{self.place(key)}: \"{key}\" must be a non-negative integer, not "
                             f"{_json_type(value)}: Orthanc logs an error and applies no limit")
        return 0

    def users(self) -> tuple[str, ...]:
        if "RegisteredUsers" not in self.values:
            return ()
        users = self.values["RegisteredUsers"]
        if not isinstance(users, dict):
            raise self.bad("RegisteredUsers", "an object {\"user\": \"password\"}")
        for name, password in users.items():
            if not isinstance(password, (str, int, float, bool)):
                self.warnings.append(f"{self.place('RegisteredUsers')}: the password of user "
                                     f"\"{name}\" is {_json_type(password)}, not a string")
        return tuple(users)

    def plugins(self) -> tuple[tuple[str, ...], tuple[Path, ...]]:
        if "Plugins" not in self.values:
            return (), ()
        entries = self.values["Plugins"]
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise self.bad("Plugins", "a list of strings", "Orthanc refuses to start with it "
                           "(\"Badly formatted list of strings\")")
        resolved = tuple(str(self.path("Plugins", e)) for e in entries)
        return resolved, _plugin_files(resolved, self.warnings, self.place("Plugins"))

    def backends(self, plugin_files: tuple[Path, ...]) -> tuple[str, str, tuple[str, ...]]:
        index, storage = "sqlite", "filesystem"
        disabled: list[str] = []
        for section, backend in BACKEND_SECTIONS.items():
            if section not in self.values:
                continue
            body = self.values[section]
            if not isinstance(body, dict):
                self.warnings.append(f"{self.place(section)}: \"{section}\" is not an object: "
                                     f"the {backend} plugin ignores it")
                disabled.append(section)
                continue
            enabled = flagged = False
            for flag in ("EnableIndex", "EnableStorage"):
                value = body.get(flag, False)
                if value is True:
                    enabled = True
                    current = index if flag == "EnableIndex" else storage
                    if current not in ("sqlite", "filesystem"):
                        self.warnings.append(
                            f"{self.place(section)}: {section}.{flag} is true but {current} "
                            "already provides it: Orthanc refuses to start if both plugins load")
                        continue
                    if flag == "EnableIndex":
                        index = backend
                    else:
                        storage = backend
                elif value is not False:
                    flagged = True
                    disabled.append(f"{section}.{flag}")
                    self.warnings.append(
                        f"{self.place(section)}: {section}.{flag} is {_json_type(value)} "
                        f"{json.dumps(value)[:40]}, not true: with the {backend} plugin loaded "
                        "Orthanc stops (\"is not a Boolean as expected\"); without it, the "
                        f"{'index' if flag == 'EnableIndex' else 'storage'} stays in SQLite/files")
            if not enabled and not flagged:
                disabled.append(section)
                self.warnings.append(
                    f"{self.place(section)}: a \"{section}\" section is present but neither "
                    "EnableIndex nor EnableStorage is true: Orthanc uses SQLite and the filesystem")
        names = [p.name.lower() for p in plugin_files]
        for section, (backend, marker) in OBJECT_STORAGE_SECTIONS.items():
            if section not in self.values:
                continue
            if any(marker in n for n in names):
                if storage == "filesystem":
                    storage = backend
            else:
                self.warnings.append(f"{self.place(section)}: a \"{section}\" section is present "
                                     "but no matching plugin was found in Plugins")
        return index, storage, tuple(disabled)

    def build(self, given: Path, files: tuple[Path, ...]) -> OrthancConfig:
        storage_str = self.string("StorageDirectory", "OrthancStorage")
        index_key = "IndexDirectory" if "IndexDirectory" in self.values else "StorageDirectory"
        remote = self.boolean("RemoteAccessAllowed", False)
        plugins, plugin_files = self.plugins()
        index_backend, storage_backend, disabled = self.backends(plugin_files)
        mode = self.values.get("MaximumStorageMode")
        facts = dict(
            storage_dir=self.path("StorageDirectory", storage_str),
            index_dir=self.path(index_key, self.string("IndexDirectory", storage_str)),
            compression=self.boolean("StorageCompression", False),
            store_md5=self.boolean("StoreMD5ForAttachments", True),
            index_backend=index_backend, storage_backend=storage_backend,
            http_port=self.port("HttpPort", 8042), ssl=self.boolean("SslEnabled", False),
            remote_access=remote, auth_enabled=self.boolean("AuthenticationEnabled", remote),
            registered_users=self.users(),
            max_storage_size=self.limit("MaximumStorageSize"),
            max_patient_count=self.limit("MaximumPatientCount"),
            plugins=plugins, http_enabled=self.boolean("HttpServerEnabled", True),
            dicom_port=self.lenient_port("DicomPort", 4242),
            dicom_enabled=self.boolean("DicomServerEnabled", True),
            plugin_files=plugin_files, disabled_backends=disabled,
            max_storage_mode=mode if isinstance(mode, str) else None)
        # Built last: reading the values above adds warnings.
        return OrthancConfig(path=given, files=files, values=self.values,
                             warnings=tuple(dict.fromkeys(self.warnings)),
                             defined_in={key: src.path for key, (src, _) in self.origin.items()},
                             **facts)


def _plugin_files(entries: tuple[str, ...], warnings: list[str], place: str) -> tuple[Path, ...]:
    found: list[Path] = []
    for entry in entries:
        p = Path(entry)
        try:
            if p.is_dir():
                found += sorted(f for f in p.iterdir()
                                if f.name.lower().endswith(PLUGIN_SUFFIXES) and not f.is_dir())
            elif p.exists():
                found.append(p)
            else:
                warnings.append(f"{place}: plugin path {entry} does not exist")
        except OSError as exc:
            warnings.append(f"{place}: cannot list plugin path {entry}: {exc.strerror or exc}")
    return tuple(found)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a Boolean"
    if isinstance(value, int):
        return f"the integer {value}" if abs(value) < 10 ** 12 else "an integer"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
