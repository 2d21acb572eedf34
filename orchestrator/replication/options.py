"""The options of a replication run, one class for `replicate` and `import-storage`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from orchestrator.orthanc.storage import DEFAULT_MAX_SIZE
from orchestrator.replication.pool import RetryPolicy

DEFAULT_WORKERS = 8  # measured: see docs/replication.md


class PresenceMode(Enum):
    """--check-target: whether to ask the target for an instance before sending it."""

    AUTO = "auto"  # ask while asking pays (see target.Presence)
    ALWAYS = "always"
    NEVER = "never"


@dataclass(frozen=True)
class Options:
    """What a run does; the dry run is not here but in the run's `Writes`."""

    workers: int = DEFAULT_WORKERS
    verify: bool = False
    full: bool = False  # ignore the saved cursor (a rerun still skips what is there)
    presence: PresenceMode = PresenceMode.AUTO
    target_config: Path | None = None
    policy: RetryPolicy = RetryPolicy()
    # import-storage only
    index: Path | None = None  # None: DIR/index when present
    use_index: bool = True  # False: judge every file by its content
    max_size: int = DEFAULT_MAX_SIZE
