"""The example plans and the systemd unit shipped with the tool, wherever it is installed.

A wheel installs them as data files under `<prefix>/share/orchestrator/` (playbooks/ and
systemd/); a source checkout (or an editable install) has them beside the package. Reads only.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

from orchestrator.errors import InputError

FOLDERS = ("playbooks", "systemd")


def examples_root(prefixes: list[Path] | None = None) -> Path:
    """The folder holding playbooks/ and systemd/: the installed data, else the checkout."""
    candidates = [Path(p) / "share" / "orchestrator" for p in (prefixes or _prefixes())]
    candidates.append(Path(__file__).resolve().parent.parent)  # a source checkout
    for root in candidates:
        if (root / "playbooks").is_dir():
            return root
    raise InputError("the example plans are not installed with this copy of the tool",
                     hint="reinstall it from its wheel or source tree (pip install orchestrator)")


def example_files(root: Path) -> list[Path]:
    """Every example file, relative to `root`, sorted (playbooks first, then the unit)."""
    out: list[Path] = []
    for folder in FOLDERS:
        base = root / folder
        if base.is_dir():
            out += sorted(p.relative_to(root) for p in base.iterdir() if p.is_file())
    return out


def find_example(root: Path, name: str) -> Path:
    """The example called `name` (with or without its folder); InputError listing the names."""
    files = example_files(root)
    for rel in files:
        if name in (str(rel), rel.name, rel.stem):
            return root / rel
    raise InputError(f"no example called {name!r}",
                     hint="one of: " + ", ".join(rel.name for rel in files))


def _prefixes() -> list[Path]:
    seen: list[Path] = []
    for p in (sysconfig.get_path("data"), sys.prefix, sys.base_prefix):
        if p and Path(p) not in seen:
            seen.append(Path(p))
    return seen
