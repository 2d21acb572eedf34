"""The one place where dry-run is decided: every change goes through `Changes.apply`.

A port's change method describes the change in one line and hands the action
to `apply`. In a real run the line is recorded and the action runs; in a dry
run the line is recorded and the action does not run (it returns the
`dry_result` the port gave). Both lists are built by the same code, so the
changes `plan` prints are the changes `run` executes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Change:
    """One change to the machine, in words."""

    text: str
    done: bool  # False: recorded only (dry run), or the action raised


class Changes:
    """Record changes; act on them unless `dry`."""

    def __init__(self, dry: bool = False):
        self.dry = dry
        self.items: list[Change] = []

    def apply(self, text: str, action: Callable[..., T], *args: Any, dry_result: Any = None,
              simulate: Callable[[], Any] | None = None, **kwargs: Any) -> T:
        """Record `text`; run `action(*args, **kwargs)` unless this is a dry run.

        In a dry run `simulate` (if given) runs instead, so that a port can keep
        its view of the machine consistent with the changes it did not make.
        """
        if self.dry:
            self.items.append(Change(text, False))
            if simulate is not None:
                simulate()
            return dry_result
        index = len(self.items)
        self.items.append(Change(text, False))
        result = action(*args, **kwargs)
        self.items[index] = Change(text, True)
        return result

    def texts(self, start: int = 0) -> list[str]:
        """The recorded change lines from position `start` on."""
        return [c.text for c in self.items[start:]]

    def __len__(self) -> int:
        return len(self.items)
