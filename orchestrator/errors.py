"""Exit codes and the expected-error types every layer raises.

An `OrchestratorError` is something the operator can act on: the CLI prints its
message and hint on one line each, with no traceback, and exits with its code.
Any other exception is a bug: the CLI prints the traceback and exits with
`ExitCode.INTERNAL`.

Messages and hints are redacted when the error is made: a URL's credentials never
reach the terminal, a log line or the journal through an error, whoever wrote it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from orchestrator.secrets import redact_text


class ExitCode(IntEnum):
    """The tool's exit codes: the one table, documented in the README."""

    OK = 0  # done (or dry-run found nothing blocking)
    REFUSED = 1  # refused or failed before changing anything
    BAD_INPUT = 2  # bad plan, Orthanc config or arguments
    ROLLED_BACK = 3  # a step failed; everything was rolled back
    ROLLBACK_INCOMPLETE = 4  # a step failed and rollback is incomplete
    JOURNAL_OPEN = 5  # an unfinished run's journal exists
    INTERNAL = 70  # a bug in the tool (EX_SOFTWARE): traceback printed
    INTERRUPTED = 130  # Ctrl-C


@dataclass(frozen=True)
class Completed:
    """What a finished child process left: its argv, exit code and output."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str = ""
    stderr: str = ""

    def tail(self, lines: int = 5) -> str:
        """Return the last lines of stderr (or stdout), for an error message."""
        text = (self.stderr or self.stdout).strip().splitlines()
        return " | ".join(text[-lines:])


class OrchestratorError(Exception):
    """An expected failure with a one-line message and a hint for the operator."""

    exit_code: ExitCode = ExitCode.REFUSED

    def __init__(self, message: str, hint: str | None = None, *,
                 completed: Completed | None = None, exit_code: ExitCode | None = None):
        message = redact_text(message)
        super().__init__(message)
        self.message = message
        self.hint = redact_text(hint) if hint else hint
        self.completed = completed
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class InputError(OrchestratorError):
    """Bad user input: a plan, an Orthanc configuration, an argument, a file."""

    exit_code = ExitCode.BAD_INPUT


class RefusedError(OrchestratorError):
    """Refused before changing anything (preflight, hazard, unreachable server)."""

    exit_code = ExitCode.REFUSED


class CommandError(OrchestratorError):
    """A child process failed, timed out or could not be started."""


class ServiceError(OrchestratorError):
    """A service manager could not reach or observe the requested state."""


class OrthancHttpError(OrchestratorError):
    """An Orthanc REST call failed (connection, status code, or a malformed answer)."""

    def __init__(self, message: str, hint: str | None = None, *, status: int | None = None,
                 transient: bool = False, **kwargs):
        super().__init__(message, hint, **kwargs)
        self.status = status
        self.transient = transient


class JournalOpenError(OrchestratorError):
    """An unfinished run's journal (or a live run's lock) is in the way."""

    exit_code = ExitCode.JOURNAL_OPEN


class StepError(OrchestratorError):
    """A plan step failed while it was applied."""
