"""Hold DESIGN.md's import direction: cli -> plan/engine/report -> steps -> orthanc/services -> host.

Read from the source with `ast` (module-level and function-level imports alike),
so a lazy import inside a function counts too.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "orchestrator"

# layer -> the layers it may import (besides itself and the leaves `errors` and `journal`)
ALLOWED = {
    "cli": {"plan", "engine", "report", "steps", "orthanc", "services", "host", "replication", "wiring", "runs"},
    "runs": {"wiring", "plan", "engine", "steps", "orthanc"},
    "wiring": {"plan", "steps", "orthanc", "services", "host"},
    "plan": {"orthanc"},
    "engine": {"steps.base"},
    "report": {"steps", "orthanc", "services", "host"},
    "steps": {"orthanc", "services", "host"},
    "orthanc": {"host"},
    "services": {"orthanc", "host"},
    "host": set(),
    "replication": {"orthanc", "host"},
}
LEAVES = {"errors", "journal", "__init__", "__main__"}
THIRD_PARTY_OWNERS = {"click": {"cli"}, "yaml": {"plan"}, "jsonschema": {"plan"}}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "?"


def _modules():
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts)
        yield name.removesuffix(".__init__"), ast.parse(path.read_text(), str(path))


def _imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


@functools.cache
def _leaves() -> frozenset[str]:
    """LEAVES, plus any top-level module importing nothing of the package but errors."""
    out = set(LEAVES)
    for path in PACKAGE.glob("*.py"):
        targets = {t for t in _imports(ast.parse(path.read_text())) if t.startswith("orchestrator.")}
        if targets <= {"orchestrator.errors"}:
            out.add(path.stem)
    return frozenset(out)


def _allowed(src: str, dst: str) -> bool:
    src_layer, dst_layer = _layer(src), _layer(dst)
    if dst_layer in _leaves() or src_layer == dst_layer or src_layer in LEAVES:
        return True
    allowed = ALLOWED.get(src_layer, set())
    rest = dst.split(".", 1)[1] if "." in dst else dst
    return dst_layer in allowed or any(rest == a or rest.startswith(a + ".") for a in allowed)


def test_layers_import_only_downwards():
    wrong = []
    for name, tree in _modules():
        for target in _imports(tree):
            if target.startswith("orchestrator.") and not _allowed(name, target):
                wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_the_engine_imports_no_concrete_step_or_adapter():
    tree = ast.parse((PACKAGE / "engine.py").read_text())
    bad = [t for t in _imports(tree) if t.startswith(("orchestrator.steps.", "orchestrator.host",
                                                       "orchestrator.services"))
           and t != "orchestrator.steps.base"]
    assert not bad


def test_only_their_owners_import_click_yaml_jsonschema():
    wrong = []
    for name, tree in _modules():
        for target in _imports(tree):
            owners = THIRD_PARTY_OWNERS.get(target.split(".")[0])
            if owners is not None and _layer(name) not in owners:
                wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_steps_never_decide_dry_run():
    """Dry-run lives in host/changes.py: no step reads a `dry` flag."""
    for path in (PACKAGE / "steps").glob("*.py"):
        text = path.read_text()
        assert ".dry" not in text and "dry_run" not in text, path.name
