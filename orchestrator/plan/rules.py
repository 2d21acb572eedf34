"""The rules a schema cannot express: the service's state at each step, step order,
credentials that cannot work, and a plan that contradicts its Orthanc config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.errors import InputError
from orchestrator.orthanc.credentials import split_url
from orchestrator.plan.document import line_at
from orchestrator.plan.model import Plan
from orchestrator.plan.problems import KeyPath, PlanError, Problem

NEEDS_STOPPED = ("snapshot", "relocate", "upgrade", "package")
COPIES = ("snapshot", "relocate")  # the index as it was, before a new binary opens it


def rule_problems(raw: dict, lines: dict[KeyPath, int]) -> list[Problem]:
    """Checks the schema cannot express: the service's state at each step, step order,
    credentials that cannot work."""
    out: list[Problem] = []

    def at(path: KeyPath, message: str, hint: str) -> None:
        out.append(Problem(line_at(lines, path), path, message, hint))

    kinds = [s if isinstance(s, str) else next(iter(s)) for s in raw["steps"]]
    running, last_stop, last_start = True, None, None  # a plan starts on a running service
    for i, kind in enumerate(kinds):
        here = ("steps", i)
        if kind in NEEDS_STOPPED and running:
            if last_start is not None:
                at(here, f"{kind} runs on a running service: steps[{last_start}] started it again",
                   f"move {kind} before that start-service")
            else:
                at(here, f"{kind} runs on a running service: no stop-service before it",
                   f"add `- stop-service` before {kind}")
        if kind == "health-check" and not running:
            at(here, f"health-check on a stopped service (steps[{last_stop}] stopped it)",
               "add `- start-service` before health-check")
        elif kind == "health-check" and last_start is None:
            at(here, "health-check has no start-service before it",
               "a health check proves a restart: add `- start-service` before it")
        if kind == "relocate" and "upgrade" in kinds[:i]:
            at(here, f"relocate comes after upgrade (steps[{kinds.index('upgrade')}])",
               "relocate first, so the upgrade runs on the new copy")
        if kind == "package":
            later = [j for j, k in enumerate(kinds) if k in COPIES and j > i]
            if later:
                at(here, f"package comes before {kinds[later[0]]} (steps[{later[0]}]): the new "
                   "binary must never open the only copy of the index",
                   f"move package after {kinds[later[0]]}")
            elif not any(k in COPIES for k in kinds[:i]):
                at(here, "package has no snapshot or relocate before it: the new binary would "
                   "open the only copy of the index", "add `- snapshot` (or a relocate step) "
                   "before package")
        if kind == "stop-service":
            running, last_stop = False, i
        elif kind == "start-service":
            running, last_start = True, i
        if kind == "upgrade" and "start-service" not in kinds[i + 1:]:
            at(here, "upgrade has no start-service after it",
               "add `- start-service` and `- health-check` after upgrade")

    out += blue_green_problems(raw, kinds, lines)

    creds = raw["service"].get("credentials") or {}
    cpath = ("service", "credentials")
    if "password_env" in creds and "password_file" in creds:
        at(cpath + ("password_file",), "give password_env or password_file, not both",
           "keep the one the service host provides")
    url = raw["service"].get("url")
    if url is not None:
        try:
            _, in_url = split_url(url)
        except InputError as exc:
            at(("service", "url"), exc.message, exc.hint or "")
        else:
            if in_url is not None and in_url.password:
                at(("service", "url"), "an inline password is not accepted (user:password@ in the URL)",
                   "name it in credentials: {username: ..., password_env: VAR}")
            if ("password_env" in creds or "password_file" in creds) and "username" not in creds \
                    and not (in_url and in_url.username):
                at(cpath, "a password source without a username", "add credentials.username")
    elif ("password_env" in creds or "password_file" in creds) and "username" not in creds:
        at(cpath, "a password source without a username", "add credentials.username")
    return out


BLUE_GREEN_AFTER_COPY = ("catch-up", "freeze", "verify-copy", "switch")


def blue_green_problems(raw: dict, kinds: list[str],
                        lines: dict[KeyPath, int]) -> list[Problem]:
    """The order of a blue/green move: one replicate (it names the new server) before the
    other steps; a switch only after a freeze and a verify-copy during it; no inline
    password in the new server's URL (the plan's options are journaled)."""
    out: list[Problem] = []

    def at(path: KeyPath, message: str, hint: str) -> None:
        out.append(Problem(line_at(lines, path), path, message, hint))

    if kinds.count("replicate") > 1:
        at(("steps",), "more than one replicate step", "a move copies to one new server: keep one")
    for i, kind in enumerate(kinds):
        here = ("steps", i)
        if kind in BLUE_GREEN_AFTER_COPY and "replicate" not in kinds[:i]:
            at(here, f"{kind} has no replicate step before it",
               "add `- replicate: {to: http://new-server:8042}` before it")
        if kind == "verify-copy" and "freeze" not in kinds[:i]:
            at(here, "verify-copy before any freeze: writes still reach the old server",
               "put verify-copy after freeze")
        if kind == "switch" and ("freeze" not in kinds[:i] or "verify-copy" not in kinds[:i]):
            at(here, "switch without a freeze and a verify-copy before it: writes between the "
               "last copy and the switch would be lost", "add `- freeze` and `- verify-copy` first")
        if kind == "replicate" and isinstance(raw["steps"][i], dict):
            to = (raw["steps"][i].get("replicate") or {}).get("to")
            try:
                _, in_url = split_url(to) if isinstance(to, str) else ("", None)
            except InputError as exc:
                at(here + ("replicate", "to"), exc.message, exc.hint or "")
                continue
            if in_url is not None and in_url.password:
                at(here + ("replicate", "to"), "an inline password is not accepted "
                   "(user:password@ in the URL)",
                   "name it in credentials: {username: ..., password_env: VAR}")
    return out


def check_against_config(plan: Plan, config: Any) -> None:
    """Refuse a plan that contradicts its Orthanc config (anything with `storage_dir` and
    `index_dir`): a relocate onto the folder it copies from (its `from`, else the database
    folder in use) would leave no rollback point."""
    in_use = {Path(config.storage_dir), Path(config.index_dir)}
    problems = []
    for step in plan.steps:
        if step.kind != "relocate":
            continue
        source = {Path(step.options["from"])} if step.options.get("from") else in_use
        if Path(step.options["to"]) in source:
            what = "the folder it copies from" if step.options.get("from") else \
                "the database folder in use"
            problems.append(Problem(
                step.line, ("steps", step.index, "relocate", "to"), f"{step.options['to']} is {what}",
                "relocate to a new folder (e.g. db-v7); the old one stays as the rollback point"))
    if problems:
        raise PlanError(str(plan.source), problems)

