"""The command line: parse, wire, call, render, exit.

Commands live in their own modules and are imported only when invoked, so
`orchestrator --help` stays fast. This package is the only place that imports
click or calls sys.exit.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback

import click

from orchestrator import __version__
from orchestrator.errors import ExitCode, OrchestratorError

# name -> (module, attribute, one-line help). The help is kept here so that the
# top-level --help lists every command without importing any of them.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "inspect": ("orchestrator.cli.inspect_cmd", "inspect",
                "Show what the tool sees of an Orthanc: config, index, binary, hazards."),
    "validate": ("orchestrator.cli.plan_cmds", "validate",
                 "Check a plan and the Orthanc configuration it points at."),
    "schema": ("orchestrator.cli.plan_cmds", "schema", "Print the plan's JSON Schema."),
    "plan": ("orchestrator.cli.run_cmds", "plan",
             "Dry-run a plan: every step and the exact changes; changes nothing."),
    "run": ("orchestrator.cli.run_cmds", "run",
            "Run a plan; on failure roll back automatically."),
    "status": ("orchestrator.cli.run_cmds", "status", "Explain the last run from its journal."),
    "rollback": ("orchestrator.cli.run_cmds", "rollback",
                 "Finish an interrupted run backwards: old state, old service healthy."),
    "resume": ("orchestrator.cli.run_cmds", "resume",
               "Continue an interrupted run forwards where each done step can be verified."),
    "revert": ("orchestrator.cli.revert_cmd", "revert",
               "Undo the last finished run: old folder, package and version; nothing lost."),
    "replicate": ("orchestrator.cli.replicate_cmds", "replicate",
                  "Copy every instance from one Orthanc to another over REST."),
    "import-storage": ("orchestrator.cli.replicate_cmds", "import_storage",
                       "Send the DICOM files of an Orthanc storage folder to an Orthanc."),
    "examples": ("orchestrator.cli.examples_cmd", "examples",
                 "List, print or copy the example plans and the systemd unit."),
}


def _set_level(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        from orchestrator.progress import Level, set_level

        set_level(Level.QUIET if param.name == "quiet" else Level.VERBOSE)


QUIET_OPT = click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set_level,
                         help="No live output on stderr: only the result (and errors).")
VERBOSE_OPT = click.option("-v", "--verbose", is_flag=True, expose_value=False,
                           callback=_set_level, help="Also each step's changes as they happen.")


class LazyGroup(click.Group):
    """A click group that imports a command's module only when it runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, _, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


EPILOG = """Exit codes: 0 done, 1 refused before changing anything, 2 bad input,
3 failed and rolled back, 4 rollback incomplete, 5 an unfinished run's journal exists,
70 internal error (a bug: please report the traceback)."""


@click.group(cls=LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="orchestrator")
@QUIET_OPT
@VERBOSE_OPT
def cli() -> None:
    """Upgrade Orthanc safely and copy its data between servers.

    Start with `orchestrator inspect /etc/orthanc/`, then write a plan
    (see playbooks/), `validate` it, dry-run it with `plan`, and `run` it.
    """


def _wants_json(argv: list[str]) -> bool:
    return "--json" in argv


def _error_document(code: ExitCode, message: str, hint: str | None) -> None:
    """The one JSON document of a command stopped early by an error (README, `--json` output)."""
    click.echo(json.dumps({"ok": False, "exit_code": int(code), "error": message, "hint": hint}))


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; map expected errors to one line and their exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    for stream in (sys.stdout, sys.stderr):
        # A narrow encoding (cp1252 when Windows redirects, ASCII) must never fail a run's
        # output after the run: what it cannot print becomes "?" (bars have ASCII stand-ins).
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    try:
        cli.main(args=args, prog_name="orchestrator", standalone_mode=False)
    except OrchestratorError as exc:
        if _wants_json(args):
            _error_document(exc.exit_code, exc.message, exc.hint)
        click.echo(f"orchestrator: error: {exc.message}", err=True)
        if exc.hint:
            click.echo(f"  hint: {exc.hint}", err=True)
        sys.exit(int(exc.exit_code))
    except (click.exceptions.Abort, KeyboardInterrupt):
        if _wants_json(args):
            _error_document(ExitCode.INTERRUPTED, "interrupted", None)
        click.echo("orchestrator: interrupted", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    except click.ClickException as exc:
        # Usage errors: click formats them (with the offending option) itself.
        if _wants_json(args):
            ctx = getattr(exc, "ctx", None)
            where = ctx.command_path if ctx is not None else "orchestrator"
            _error_document(ExitCode.BAD_INPUT, exc.format_message(), f"see `{where} --help`")
        exc.show()
        sys.exit(int(ExitCode.BAD_INPUT))
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - a bug: show everything
        if _wants_json(args):
            _error_document(ExitCode.INTERNAL, f"internal error (a bug): {type(exc).__name__}",
                            "please report the traceback printed on stderr")
        traceback.print_exc()
        click.echo("orchestrator: internal error (a bug): please report the traceback above",
                   err=True)
        sys.exit(int(ExitCode.INTERNAL))
    sys.exit(0)
