"""The PostgreSQL and MySQL sections of an Orthanc configuration, as the plugins read them.

Facts checked in the plugins' sources (orthanc-databases, PostgreSQLParameters
and MySQLParameters, plugins 4.0 to 10.x):
- PostgreSQL: `ConnectionUri` wins over Host/Port/Database/Username/Password;
  Host defaults to "localhost", Port to 5432; a Host that starts with "/" is a
  Unix socket folder (libpq). An empty Database makes libpq use the user name.
- MySQL: Host "localhost", Port 3306, UnixSocket "/var/run/mysqld/mysqld.sock"
  by default; the client library uses the socket when Host is "localhost" and
  TCP otherwise. Database must be non-empty letters, digits, `_` or `$`.
- Both: `EnableIndex`/`EnableStorage` count only when exactly JSON `true`;
  `Lock` defaults to true (an advisory lock held while Orthanc runs).

The password comes from the config, where `${VAR}` has already been
substituted; `password_from` says which (the value itself is never shown).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from orchestrator.errors import InputError
from orchestrator.host.databases import Connection, Engine
from orchestrator.orthanc.config import OrthancConfig

SECTIONS = {"PostgreSQL": Engine.POSTGRESQL, "MySQL": Engine.MYSQL}
DEFAULT_PORTS = {Engine.POSTGRESQL: 5432, Engine.MYSQL: 3306}
MYSQL_DEFAULT_SOCKET = "/var/run/mysqld/mysqld.sock"
_MYSQL_NAME = re.compile(r"[A-Za-z0-9_$]+")
# Shared-library names of the index plugins (Debian: /usr/share/orthanc/plugins/*.so -> *.so.X.Y).
INDEX_LIBRARIES = {Engine.POSTGRESQL: "orthancpostgresqlindex", Engine.MYSQL: "orthancmysqlindex"}


class Transport(Enum):
    TCP = "tcp"
    UNIX_SOCKET = "unix-socket"


class BackendDisabledError(InputError):
    """A plugin section is present but neither EnableIndex nor EnableStorage is exactly true."""


@dataclass(frozen=True)
class DatabaseSection:
    """One PostgreSQL or MySQL section: where the plugin connects, and what it keeps there."""

    engine: Engine
    section: str  # "PostgreSQL" | "MySQL"
    file: Path  # the configuration file that holds the section
    index: bool  # EnableIndex is exactly true
    storage: bool  # EnableStorage is exactly true: attachments live in the database
    host: str
    port: int
    database: str
    user: str
    password: str = field(repr=False, compare=False)
    password_from: str = "none"  # "config" | "${VAR}" | "ConnectionUri" | "none"
    socket: str | None = None  # MySQL's UnixSocket
    ssl: bool = False
    lock: bool = True
    from_uri: bool = False  # PostgreSQL ConnectionUri
    not_true: tuple[str, ...] = ()  # "EnableIndex is the string \"true\"": flags set, not true

    @property
    def enabled(self) -> bool:
        return self.index or self.storage

    @property
    def transport(self) -> Transport:
        if self.engine is Engine.POSTGRESQL:
            return Transport.UNIX_SOCKET if self.host.startswith("/") else Transport.TCP
        if self.socket and self.host in ("", "localhost"):
            return Transport.UNIX_SOCKET
        return Transport.TCP

    @property
    def files_on_disk(self) -> bool:
        """The index is here but the attachments are files: a copied index shares them."""
        return self.index and not self.storage

    def place(self, key: str | None = None) -> str:
        """'FILE: Section.Key', for messages."""
        return f"{self.file}: {self.section}" + (f".{key}" if key else "")

    def connection(self) -> Connection:
        """The port's view: where and as whom (the password travels in it, never printed)."""
        return Connection(self.engine, self.host, self.port, self.user, self.database,
                          password=self.password, socket=self.socket, origin=self.place())

    def to_dict(self) -> dict:
        """JSON-safe facts; the password only as where it comes from."""
        return {"engine": self.engine.value, "section": self.section, "file": str(self.file),
                "index": self.index, "storage": self.storage, "host": self.host,
                "port": self.port, "database": self.database, "user": self.user,
                "password_from": self.password_from, "socket": self.socket,
                "transport": self.transport.value, "ssl": self.ssl, "lock": self.lock,
                "from_uri": self.from_uri, "not_true": list(self.not_true)}


def read_backends(config: OrthancConfig) -> tuple[DatabaseSection, ...]:
    """The PostgreSQL and MySQL sections of `config`, enabled or not; InputError if malformed."""
    found = []
    for section, engine in SECTIONS.items():
        body = config.values.get(section)
        if not isinstance(body, dict):
            continue  # absent; a non-object is already a config warning (the plugin ignores it)
        file = config.file_defining(section) or Path(config.path)
        found.append(_Section(section, engine, body, file).read())
    return tuple(found)


def index_database(config: OrthancConfig) -> DatabaseSection | None:
    """The section that holds the index, or None when the index is SQLite.

    BackendDisabledError when a section's EnableIndex/EnableStorage is set to
    something other than a Boolean ("true", 1, null): the operator meant the
    database, and Orthanc either stops (plugin loaded) or silently opens SQLite
    (plugin not loaded). `false`, or no flag at all, is a plain SQLite site:
    Debian's own postgresql.json and mysql.json ship that way.
    """
    sections = read_backends(config)
    for s in sections:
        if s.index:
            return s
    for s in sections:
        if s.not_true:
            raise BackendDisabledError(
                f"{s.place('EnableIndex')}: the section is present but not enabled "
                f"({'; '.join(s.not_true)}): with the plugin loaded Orthanc stops (\"not a "
                "Boolean as expected\"), without it Orthanc uses SQLite",
                hint="set \"EnableIndex\": true (a JSON Boolean) if the index lives there; "
                     "false (or remove the section) if it does not")
    return None


def plugin_version(config: OrthancConfig, engine: Engine) -> str | None:
    """The index plugin's version from its library's file name (Debian: .so -> .so.4.0)."""
    for lib in config.plugin_files:
        if INDEX_LIBRARIES[engine] not in lib.name.lower():
            continue
        try:
            target = lib.resolve()
        except OSError:
            continue
        m = re.search(r"\.so\.(\d+(?:\.\d+)*)$", target.name)
        if m:
            return m.group(1)
    return None


class _Section:
    """Typed access to one section, errors naming FILE: Section.Key."""

    def __init__(self, section: str, engine: Engine, body: dict, file: Path):
        self.section, self.engine, self.body, self.file = section, engine, body, file

    def bad(self, key: str, expected: str) -> InputError:
        return InputError(f"{self.file}: {self.section}.{key} must be {expected}",
                          hint=f"the {self.section} plugin refuses to start with it")

    def string(self, key: str, default: str) -> str:
        value = self.body.get(key, default)
        if not isinstance(value, str):
            raise self.bad(key, "a string")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.body.get(key, default)
        if not isinstance(value, bool):
            raise self.bad(key, "true or false")
        return value

    def port(self, key: str, default: int) -> int:
        value = self.body.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65535:
            raise self.bad(key, "a port number from 1 to 65534")
        return value

    def flags(self) -> tuple[bool, bool, tuple[str, ...]]:
        out, odd = [], []
        for key in ("EnableIndex", "EnableStorage"):
            value = self.body.get(key, False)
            out.append(value is True)
            if value is not True and value is not False:
                odd.append(f"{key} is {_describe(value)}, not true")
        return out[0], out[1], tuple(odd)

    def password_source(self, key: str) -> str:
        """'${VAR}' when the raw file sets `key` in this section from a variable, else 'config'."""
        if key not in self.body:
            return "none"
        try:
            raw = self.file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "config"
        start = re.search(r'"' + re.escape(self.section) + r'"\s*:\s*\{', raw)
        tail = raw[start.end():] if start else raw
        m = re.search(r'"' + key + r'"\s*:\s*"[^"]*?\$\{([^}:]+)', tail)
        plain = re.search(r'"' + key + r'"\s*:', tail)
        if m and plain and m.start() == plain.start():
            return "${" + m.group(1) + "}"
        return "config"

    def read(self) -> DatabaseSection:
        index, storage, odd = self.flags()
        common = dict(engine=self.engine, section=self.section, file=self.file, index=index,
                      storage=storage, lock=self.boolean("Lock", True),
                      ssl=self.boolean("EnableSsl", False), not_true=odd)
        if self.engine is Engine.POSTGRESQL:
            return self.postgresql(common)
        return self.mysql(common)

    def postgresql(self, common: dict) -> DatabaseSection:
        if "ConnectionUri" in self.body:
            return self.uri(self.string("ConnectionUri", ""), common)
        user = self.string("Username", "")
        password = self.string("Password", "")
        return DatabaseSection(host=self.string("Host", "localhost"),
                               port=self.port("Port", 5432),
                               database=self.string("Database", "") or user, user=user,
                               password=password, password_from=self.password_source("Password"),
                               **common)

    def uri(self, text: str, common: dict) -> DatabaseSection:
        try:
            parts = urlsplit(text)
            port = parts.port or 5432
        except ValueError:
            raise self.bad("ConnectionUri", "a postgresql://user:password@host:port/database "
                                            "URI") from None
        if parts.scheme not in ("postgresql", "postgres"):
            raise self.bad("ConnectionUri", "a postgresql:// URI")
        query = parse_qs(parts.query)
        host = unquote(parts.hostname or "") or query.get("host", ["localhost"])[0]
        user = unquote(parts.username or "") or query.get("user", [""])[0]
        password = unquote(parts.password or "") or query.get("password", [""])[0]
        source = self.password_source("ConnectionUri") if password else "none"
        return DatabaseSection(host=host, port=port,
                               database=unquote(parts.path.lstrip("/")) or user, user=user,
                               password=password, from_uri=True,
                               password_from="ConnectionUri" if source == "config" else source,
                               **common)

    def mysql(self, common: dict) -> DatabaseSection:
        database = self.string("Database", "")
        if (common["index"] or common["storage"]) and not _MYSQL_NAME.fullmatch(database):
            raise self.bad("Database", "a non-empty name of letters, digits, '_' or '$'")
        return DatabaseSection(host=self.string("Host", "localhost"), port=self.port("Port", 3306),
                               database=database, user=self.string("Username", ""),
                               password=self.string("Password", ""),
                               password_from=self.password_source("Password"),
                               socket=self.string("UnixSocket", MYSQL_DEFAULT_SOCKET) or None,
                               **common)


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"the string \"{value[:20]}\""
    if isinstance(value, (int, float)):
        return f"the number {value}"
    return "an array" if isinstance(value, list) else "an object"
