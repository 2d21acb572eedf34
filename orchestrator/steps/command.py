"""command: run a plan-given argv (a package install, a dump), with an optional undo argv.

Never a shell: the argv goes to the runner as a list, so a value with spaces,
quotes or `;` stays one argument. Its output is not journaled (it could hold
anything); its exit code and the last lines of its output are.
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass

from orchestrator.errors import InputError
from orchestrator.host.host import Host
from orchestrator.journal import StepRecord
from orchestrator.steps.base import RunContext, StepBase, StepFacts, StepIntent, StepOptions
from orchestrator.steps.kind import StepKind


@dataclass(frozen=True, kw_only=True)
class CommandOptions(StepOptions):
    argv: tuple[str, ...]
    undo: tuple[str, ...] | None = None
    timeout: float = 600.0
    description: str | None = None


@dataclass(frozen=True, kw_only=True)
class CommandIntent(StepIntent):
    argv: tuple[str, ...]
    undo: tuple[str, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class CommandFacts(StepFacts):
    returncode: int
    tail: str = ""


class Command(StepBase[CommandOptions, CommandIntent, CommandFacts]):
    kind = StepKind.COMMAND
    Options = CommandOptions
    Intent = CommandIntent
    Facts = CommandFacts

    def describe(self) -> str:
        return self.options.description or f"run {shlex.join(self.options.argv)}"

    def check(self, host: Host, ctx: RunContext) -> list[str]:
        for key, argv in (("argv", self.options.argv), ("undo", self.options.undo)):
            if argv and shutil.which(argv[0]) is None:
                raise InputError(f"{argv[0]} ({key}) is not an executable program here",
                                 hint="give an absolute path, or install the program")
        return []

    def intend(self, host: Host, ctx: RunContext) -> CommandIntent:
        return CommandIntent(argv=self.options.argv, undo=self.options.undo)

    def apply(self, host: Host, ctx: RunContext, intent: CommandIntent) -> CommandFacts:
        done = host.commands.run(intent.argv, timeout=self.options.timeout)
        ctx.forget_config()  # a plan-given command (a package install) may rewrite it
        return CommandFacts(returncode=done.returncode, tail=done.tail(3),
                            summary=f"exit {done.returncode}")

    def undo(self, host: Host, ctx: RunContext, record: StepRecord) -> str:
        intent = self.intent_of(record)
        if intent is None or not intent.undo:
            return "no undo command given"
        done = host.commands.run(intent.undo, timeout=self.options.timeout)
        ctx.forget_config()
        return f"ran {shlex.join(intent.undo)}: exit {done.returncode}"

    def manual_undo(self, ctx: RunContext, record: StepRecord) -> str:
        intent = self.intent_of(record)
        argv = shlex.join(intent.argv) if intent else ""
        undo = intent.undo if intent else None
        return f"undo the effect of `{argv}` by hand" + (f" (the plan's undo is `{shlex.join(undo)}`)"
                                                         if undo else "")
