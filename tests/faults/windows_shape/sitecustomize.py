"""Make this Python look like Windows' where our code can tell (put this folder on PYTHONPATH).

- `sys.platform` is "win32"; `os.name` stays "posix" (os.path and pathlib must keep working
  on this file system), so code must choose its Windows path by `sys.platform` or by
  feature, never by assuming the POSIX calls are there.
- The POSIX-only attributes are removed from `os` and `signal`; `fcntl` cannot be imported.
- A fake `msvcrt` gives `locking()`, backed by a real flock taken before `fcntl` is hidden,
  so two processes really exclude each other.

The standard and third-party modules that pick their implementation when imported are
imported first, as Linux built them: this simulates our code on Windows, not CPython.
"""

import importlib
import os
import signal
import sys
import types

_PREIMPORT = [
    "subprocess", "shutil", "tempfile", "pathlib", "platform", "ctypes", "ctypes.util",
    "selectors", "socket", "uuid", "asyncio", "multiprocessing", "getpass", "locale",
    "mimetypes", "netrc", "pwd", "grp", "urllib.request", "http.client", "ssl", "logging",
    "concurrent.futures", "sqlite3", "zlib", "faulthandler", "readline", "rlcompleter",
    # third party whose import-time branches read sys.platform
    "psutil", "click", "requests", "urllib3", "hypothesis",
    "pytest", "_pytest.capture", "_pytest.terminal", "_pytest.tmpdir", "_pytest.pathlib",
    "_pytest._io.terminalwriter", "_pytest.faulthandler", "_pytest._py.path",
    "_pytest.compat", "_pytest.pytester", "_pytest.main",
]
for _name in _PREIMPORT:
    try:
        importlib.import_module(_name)
    except Exception:  # noqa: BLE001 - absent here: nothing to pre-import
        pass

import fcntl as _fcntl  # noqa: E402 - the real lock behind the fake msvcrt

# What Windows' os lacks and our code could reach for. What the stdlib's own POSIX code needs
# underneath (os.WNOHANG for subprocess, os.statvfs for shutil.disk_usage) stays: that code
# is Linux's here, not ours, and Windows has its own.
OS_REMOVED = ["geteuid", "getuid", "getegid", "getgid", "getgroups", "getgrouplist",
              "chown", "fchown", "lchown", "getpgid", "setpgid", "getpgrp", "setsid", "getsid",
              "killpg", "fork", "forkpty", "setuid", "seteuid", "setgid", "setegid",
              "initgroups", "setgroups", "sync", "mkfifo", "mknod",
              "O_NOFOLLOW", "O_NONBLOCK", "O_DIRECTORY", "O_SYNC", "O_DSYNC", "O_NOCTTY",
              "getloadavg", "fchmod", "sched_getaffinity", "nice"]
SIGNAL_REMOVED = ["SIGHUP", "SIGKILL", "SIGUSR1", "SIGUSR2", "SIGQUIT", "SIGALRM", "SIGCHLD",
                  "SIGPIPE", "SIGSTOP", "SIGCONT", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGWINCH",
                  "SIGPROF", "SIGVTALRM", "SIGXCPU", "SIGXFSZ", "SIGSYS", "SIGTRAP", "SIGIO",
                  "SIGPOLL", "SIGPWR", "SIGURG", "SIGBUS", "SIGRTMIN", "SIGRTMAX",
                  "pause", "alarm", "setitimer", "getitimer", "siginterrupt", "pthread_kill",
                  "pthread_sigmask", "sigwait", "sigpending"]

# Windows' own Popen.kill and psutil's kill need no SIGKILL attribute; the Linux halves used
# here do, so they keep the number.
_SIGKILL = signal.SIGKILL
import subprocess  # noqa: E402

subprocess.Popen.kill = lambda self: self.send_signal(_SIGKILL)
try:
    import psutil  # noqa: E402

    psutil.Process.kill = lambda self: self._send_signal(_SIGKILL)
except ImportError:
    pass

for _attr in OS_REMOVED:
    if hasattr(os, _attr):
        delattr(os, _attr)
for _attr in SIGNAL_REMOVED:
    if hasattr(signal, _attr):
        delattr(signal, _attr)

sys.modules["fcntl"] = None  # `import fcntl` raises ImportError, as on Windows
sys.modules.pop("termios", None)
sys.modules["termios"] = None
sys.modules["resource"] = None

_msvcrt = types.ModuleType("msvcrt")
_msvcrt.LK_UNLCK, _msvcrt.LK_LOCK, _msvcrt.LK_NBLCK, _msvcrt.LK_RLCK, _msvcrt.LK_NBRLCK = range(5)


def _locking(fd, mode, nbytes):
    """msvcrt.locking: lock or unlock bytes at the current position (whole file here)."""
    if mode == _msvcrt.LK_UNLCK:
        _fcntl.flock(fd, _fcntl.LOCK_UN)
        return
    flags = _fcntl.LOCK_EX | (_fcntl.LOCK_NB if mode in (_msvcrt.LK_NBLCK, _msvcrt.LK_NBRLCK) else 0)
    try:
        _fcntl.flock(fd, flags)
    except BlockingIOError:
        raise PermissionError(13, "Permission denied") from None  # what Windows raises


_msvcrt.locking = _locking
_msvcrt.getwch = lambda: ""
_msvcrt.kbhit = lambda: False
_msvcrt.get_osfhandle = lambda fd: fd
_msvcrt.setmode = lambda fd, mode: mode
sys.modules["msvcrt"] = _msvcrt

import io  # noqa: E402

io._WindowsConsoleIO = type("_WindowsConsoleIO", (io.RawIOBase,), {})  # output is never a console

sys.platform = "win32"
