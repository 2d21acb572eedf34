"""run a plan-given argv (a package install, a dump), with an optional undo argv.

Never a shell: the argv goes to the runner as a list, so a value with spaces,
quotes or `;` stays one argument. Its output is not journaled (it could hold
anything); its exit code and the last lines of its output are.
"""

from __future__ import annotations

import shlex
import shutil
from typing import Any

from orchestrator.errors import InputError
from orchestrator.journal import StepRecord
from orchestrator.steps.base import RunContext, StepBase


class Command(StepBase):
    kind = "command"

    def describe(self) -> str:
        return self.options.get("description") or f"run {shlex.join(self.options['argv'])}"

    def check(self, host: Any, ctx: RunContext) -> list[str]:
        for key in ("argv", "undo"):
            argv = self.options.get(key)
            if argv and shutil.which(argv[0]) is None:
                raise InputError(f"{argv[0]} ({key}) is not an executable program here",
                                 hint="give an absolute path, or install the program")
        return []

    def intend(self, host: Any, ctx: RunContext) -> dict:
        return {"argv": list(self.options["argv"]), "undo": self.options.get("undo")}

    def apply(self, host: Any, ctx: RunContext, intent: dict) -> dict:
        done = host.commands.run(intent["argv"], timeout=float(self.options.get("timeout", 600)))
        return {"returncode": done.returncode, "tail": done.tail(3),
                "summary": f"exit {done.returncode}"}

    def undo(self, host: Any, ctx: RunContext, record: StepRecord) -> str:
        undo = record.intent.get("undo")
        if not undo:
            return "no undo command given"
        done = host.commands.run(undo, timeout=float(self.options.get("timeout", 600)))
        return f"ran {shlex.join(undo)}: exit {done.returncode}"

    def manual_undo(self, ctx: RunContext, record: StepRecord) -> str:
        undo = record.intent.get("undo")
        argv = shlex.join(record.intent.get("argv", []))
        return f"undo the effect of `{argv}` by hand" + (f" (the plan's undo is `{shlex.join(undo)}`)"
                                                         if undo else "")
