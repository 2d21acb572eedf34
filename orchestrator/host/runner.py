"""Run child processes: argv lists only, never a shell, with a time limit."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Protocol

from orchestrator.errors import CommandError, Completed


class Runner(Protocol):
    """Run a command to completion and return what it left."""

    def run(self, argv: Sequence[str], *, timeout: float, check: bool = True,
            env: Mapping[str, str] | None = None, cwd: str | None = None,
            input: str | None = None) -> Completed: ...


class RealRunner:
    """Run commands on this machine with subprocess (no shell, ever)."""

    def run(self, argv: Sequence[str], *, timeout: float, check: bool = True,
            env: Mapping[str, str] | None = None, cwd: str | None = None,
            input: str | None = None) -> Completed:
        """Run argv; raise CommandError on a missing program, a time-out, or (check) rc != 0."""
        argv = tuple(str(a) for a in argv)
        full_env = None
        if env is not None:
            full_env = dict(os.environ)
            full_env.update(env)
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
                               completed=Completed(argv, -1, _text(exc.stdout),
                                                   _text(exc.stderr))) from exc
        done = Completed(argv, proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise CommandError(f"{' '.join(argv[:3])} exited with {proc.returncode}: {done.tail(3)}",
                               completed=done)
        return done


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
