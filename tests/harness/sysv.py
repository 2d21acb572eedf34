"""A private copy of Debian's /etc/init.d/orthanc, pointed at a test's own Orthanc.

The stock script must never run in tests: its stop ends with
`start-stop-daemon --stop ... --exec /usr/sbin/Orthanc` (no pidfile), which
kills every Orthanc on the host, other tests' servers included. The copy gets
the test's config, pidfile and log folder, runs as root (test folders are
private to root), and has `--pidfile` added to that stop call and to `status`.
Every substitution must apply exactly once, and the result is checked to have
no unscoped stop left, so a changed stock script fails loudly instead of
producing a dangerous copy.
"""

from __future__ import annotations

import re
from pathlib import Path

from orchestrator.services.sysv import unscoped_stop_lines

STOCK_SCRIPT = Path("/etc/init.d/orthanc")


class ScriptAdaptError(RuntimeError):
    """The stock script changed: a substitution found no (or several) places."""


def _sub(text: str, pattern: str, replacement: str) -> str:
    new, count = re.subn(pattern, lambda _m: replacement, text, flags=re.MULTILINE)
    if count != 1:
        raise ScriptAdaptError(f"{count} matches for {pattern!r} in the stock init script")
    return new


def adapt_init_script(stock: str, *, script_path: Path, config: Path, pidfile: Path, logdir: Path,
                      daemon: str = "/usr/sbin/Orthanc", user: str = "root:root") -> str:
    """Return the stock script's text, scoped to one test Orthanc."""
    text = stock
    text = _sub(text, r"^DAEMON=.*$", f"DAEMON={daemon}")
    text = _sub(text, r"^LOGDIR=.*$", f"LOGDIR={logdir}")
    text = _sub(text, r"^DAEMON_ARGS=.*$", f'DAEMON_ARGS="--logdir=${{LOGDIR}} {config}"')
    text = _sub(text, r"^PIDFILE=.*$", f"PIDFILE={pidfile}")
    text = _sub(text, r"^SCRIPTNAME=.*$", f"SCRIPTNAME={script_path}")
    text = _sub(text, r"^ORTHANC_USER=.*$", f"ORTHANC_USER={user}")
    # The kill-them-all line: scope it to this test's pidfile.
    text = _sub(text, r"(start-stop-daemon --stop --quiet --oknodo --retry=0/1/KILL/5)",
                r"start-stop-daemon --stop --quiet --oknodo --retry=0/1/KILL/5 --pidfile $PIDFILE")
    text = _sub(text, r'status_of_proc "\$DAEMON"', 'status_of_proc -p "$PIDFILE" "$DAEMON"')
    left = unscoped_stop_lines(text)
    if left:
        raise ScriptAdaptError(f"unscoped start-stop-daemon --stop left on line(s) {left}")
    for system_path in ("/etc/orthanc", "/run/orthanc.pid", "/var/log/orthanc"):
        if system_path in text:
            raise ScriptAdaptError(f"{system_path} still appears in the adapted script")
    return text


def write_test_script(folder: Path, *, name: str, config: Path, pidfile: Path, logdir: Path,
                      stock: Path = STOCK_SCRIPT) -> Path:
    """Write an executable adapted copy as `folder/name` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(adapt_init_script(stock.read_text(), script_path=path, config=config,
                                      pidfile=pidfile, logdir=logdir))
    path.chmod(0o755)
    return path


def write_policy(path: Path, exit_code: int, log: Path | None = None) -> Path:
    """A fake policy-rc.d that records its arguments and exits with `exit_code`."""
    record = f'echo "$@" >> {log}\n' if log else ""
    path.write_text(f"#!/bin/sh\n{record}exit {exit_code}\n")
    path.chmod(0o755)
    return path
