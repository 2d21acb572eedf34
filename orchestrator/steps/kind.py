"""The closed set of step kinds: kebab-case in the plan and the journal, an enum in code."""

from __future__ import annotations

from enum import Enum


class StepKind(str, Enum):
    """A step kind; the value is the plan's (and the journal's) spelling."""

    PREFLIGHT = "preflight"
    STOP_SERVICE = "stop-service"
    SNAPSHOT = "snapshot"
    STAGE_SNAPSHOT = "stage-snapshot"
    STAGE_LINKS = "stage-links"
    RELOCATE = "relocate"
    STAGE_PACKAGE = "stage-package"
    PACKAGE = "package"
    UPGRADE = "upgrade"
    START_SERVICE = "start-service"
    HEALTH_CHECK = "health-check"
    COMMAND = "command"
    REPLICATE = "replicate"  # blue/green: steps/bluegreen/
    CATCH_UP = "catch-up"
    FREEZE = "freeze"
    VERIFY_COPY = "verify-copy"
    SWITCH = "switch"

    def __str__(self) -> str:
        return self.value


STAGE_SUFFIX = "-stage"


def stage_id(step_id: str) -> str:
    """The id of the stage step that pre-stages `step_id`'s work before the stop (one place)."""
    return f"{step_id}{STAGE_SUFFIX}"


def staged_id(stage_step_id: str) -> str:
    """The id of the step a stage step pre-stages: the inverse of `stage_id`."""
    return stage_step_id.removesuffix(STAGE_SUFFIX)
