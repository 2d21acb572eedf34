"""Run child processes: argv lists only, never a shell, with a time limit.

Children get a scrubbed environment: the variables named secret (the plan's
`password_env`, and any a caller hides) are dropped, so a password reaches neither
`Orthanc --version`, a service manager nor anything they start. A value a caller
passes in `env` is passed on: that child needs it. An argv holding a secret's value is
refused, and a secret value in a child's output is replaced by *** before anyone reads it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from orchestrator.errors import CommandError, Completed
from orchestrator.secrets import scrub


class Runner(Protocol):
    """Run a command to completion and return what it left."""

    def run(self, argv: Sequence[str], *, timeout: float, check: bool = True,
            env: Mapping[str, str] | None = None, cwd: str | None = None,
            input: str | None = None) -> Completed: ...


def child_env(hidden: Iterable[str], env: Mapping[str, str] | None = None,
              base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child: `base` (default: ours) without the `hidden` variables,
    plus what the caller gives in `env` (given on purpose, so kept)."""
    drop = set(hidden)
    out = {k: v for k, v in (os.environ if base is None else base).items() if k not in drop}
    out.update(env or {})
    return out


# A child's argv and output are guarded only against distinctive secret values. A short
# password is often a common word: Orthanc's default user is orthanc/orthanc, and blanking
# "orthanc" in `systemctl show orthanc.service` or `dpkg-query` output would break their
# parsing (and refusing argv holding it would refuse `journalctl -u orthanc`). Such values
# still never reach a child's environment, and messages are redacted upstream.
MIN_GUARDED = 8


def secret_values(hidden: Iterable[str], base: Mapping[str, str] | None = None) -> list[str]:
    """The distinctive values of the hidden variables that are set (never shown)."""
    src = os.environ if base is None else base
    return [src[n] for n in set(hidden) if len(src.get(n) or "") >= MIN_GUARDED]


class RealRunner:
    """Run commands on this machine with subprocess (no shell, ever), keeping secrets in."""

    def __init__(self, *, hidden_env: Iterable[str] = ()):
        self.hidden_env: set[str] = set(hidden_env)

    def hide(self, *names: str) -> None:
        """Mark more environment variables secret: no child started later sees them."""
        self.hidden_env.update(n for n in names if n)

    def run(self, argv: Sequence[str], *, timeout: float, check: bool = True,
            env: Mapping[str, str] | None = None, cwd: str | None = None,
            input: str | None = None) -> Completed:
        """Run argv; raise CommandError on a missing program, a time-out, or (check) rc != 0."""
        argv = tuple(str(a) for a in argv)
        secrets = secret_values(self.hidden_env)
        self._refuse_secret_argv(argv, secrets)
        full_env = child_env(self.hidden_env, env)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, errors="replace",
                                  timeout=timeout, env=full_env, cwd=cwd, input=input,
                                  stdin=None if input is not None else subprocess.DEVNULL)
        except FileNotFoundError as exc:
            raise CommandError(f"cannot run {argv[0]}: program not found",
                               hint="check the path, or install the program") from exc
        except PermissionError as exc:
            raise CommandError(f"cannot run {argv[0]}: permission denied",
                               hint="run as root, or check the file's mode") from exc
        except subprocess.TimeoutExpired as exc:
            raise CommandError(f"{' '.join(argv[:3])} did not finish in {timeout:.0f}s",
                               hint="the program hangs; see its logs",
                               completed=Completed(argv, -1, scrub(_text(exc.stdout), secrets),
                                                   scrub(_text(exc.stderr), secrets))) from exc
        done = Completed(argv, proc.returncode, scrub(proc.stdout, secrets),
                         scrub(proc.stderr, secrets))
        if check and proc.returncode != 0:
            raise CommandError(f"{' '.join(argv[:3])} exited with {proc.returncode}: {done.tail(3)}",
                               completed=done)
        return done

    def _refuse_secret_argv(self, argv: tuple[str, ...], secrets: list[str]) -> None:
        for value in secrets:
            if any(value in a for a in argv):
                raise CommandError(f"refusing to run {argv[0]}: an argument holds a secret "
                                   "(the value of a password variable)",
                                   hint="pass secrets through a file or the environment, "
                                        "never on a command line")


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data


class FakeRunner:
    """A Runner for unit tests, keyed by argv: each call gets the scripted result.

    A value may be a Completed, a list of Completed (consumed in order, the last
    one repeats), or an exception instance to raise.
    """

    def __init__(self, script: Mapping[tuple[str, ...], object]):
        self.script = {tuple(k): (list(v) if isinstance(v, list) else v) for k, v in script.items()}
        self.calls: list[tuple[str, ...]] = []

    def run(self, argv: Sequence[str], *, timeout: float, check: bool = True,
            env: Mapping[str, str] | None = None, cwd: str | None = None,
            input: str | None = None) -> Completed:
        key = tuple(str(a) for a in argv)
        self.calls.append(key)
        if key not in self.script:
            raise AssertionError(f"FakeRunner: unexpected command {key}")
        value = self.script[key]
        if isinstance(value, list):
            value = value.pop(0) if len(value) > 1 else value[0]
        if isinstance(value, BaseException):
            raise value
        assert isinstance(value, Completed)
        done = Completed(key, value.returncode, value.stdout, value.stderr)
        if check and done.returncode != 0:
            raise CommandError(f"{' '.join(key[:3])} exited with {done.returncode}: {done.tail(3)}",
                               completed=done)
        return done
