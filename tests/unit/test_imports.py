"""Hold the package's shape (docs/architecture.md) with a test that reads the source with `ast`.

    cli -> runs -> wiring -> plan, engine, steps -> orthanc, services -> host
            report (renders only)

- `cli` is the edge: it parses, calls a use case (`runs`) or the composition root
  (`wiring`), renders with `report`, exits. Only it imports click, only it may
  import lazily (inside functions), and it never reaches the upgrade machinery
  (engine, steps, services, host, journal) but through `runs` and `wiring`.
- `runs` holds the use cases; `wiring` builds the host, manager, REST client,
  journal and lock. Nothing below imports either.
- `report` only renders: it imports nothing of the package but itself and errors.
- `plan` is the only owner of yaml and jsonschema.
- No module is over MAX_LINES lines.

Module-level and function-level imports alike count, so a lazy import cannot hide a dependency.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "orchestrator"

# layer -> the layers (or modules) it may import, besides itself and the leaves
ALLOWED = {
    "cli": {"runs", "wiring", "plan", "report", "orthanc", "replication",
            "reverts"},
    "runs": {"holding", "wiring", "plan", "engine", "run_report", "steps", "orthanc",
             "host.runner"},
    "reverts": {"holding", "wiring", "plan", "engine", "run_report", "steps", "orthanc"},
    "holding": {"wiring", "plan", "engine"},  # the use cases' locks and signals
    "wiring": {"plan", "steps", "orthanc", "services", "host"},
    "plan": {"orthanc.credentials"},
    "engine": {"steps.base", "run_report"},
    "run_report": {"steps.base"},  # the engine's report model, split from engine.py (issue 11)
    "report": set(),
    "steps": {"orthanc", "services", "host", "plan.model",
              "replication"},  # blue/green steps copy (issue 13)
    "orthanc": {"host"},
    "services": {"orthanc", "host"},
    "host": set(),
    "replication": {"orthanc", "host"},
}
# Modules anyone may import: the error types, the journal's records and the run lock (split
# from journal.py in issue 12's round), the transfer bar, and
# any other top-level module importing nothing of the package but errors (found below).
LEAVES = {"errors", "journal", "lock", "progress", "__init__", "__main__"}
THIRD_PARTY_OWNERS = {"click": {"cli"}, "yaml": {"plan"}, "jsonschema": {"plan"}}
COMPOSITION = {"runs": {"cli"}, "wiring": {"cli", "runs", "reverts", "holding"},
               "holding": {"runs", "reverts"}}  # module -> who may import it

# Imports inside functions, outside cli/: only what exists on one platform only, and the
# plan's parsers (their import costs `orchestrator --help` and `schema` tens of ms).
PLATFORM_ONLY = {"fcntl", "msvcrt", "pwd", "grp", "ctypes", "winreg"}
DEFERRED_BY_OWNER = {"plan": {"yaml", "jsonschema"}}
# Modules other helpers are reshaping in the same round (issue 11); remove each entry as its
# lazy imports move to the top of the module.
LAZY_PENDING = {
    "orchestrator.replication.target": "replication helper",
    "orchestrator.services.detect": "imports each manager only when chosen",
}

MAX_LINES = 400
# Over the limit, each with the reason; the helpers splitting them remove their line.
TOO_LONG_PENDING = {
}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "?"


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts)
        yield name.removesuffix(".__init__"), ast.parse(path.read_text(), str(path))


def _imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def _lazy_imports(tree):
    """The imports written inside a function body."""
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _imports(fn)


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


def test_every_layer_is_known():
    layers = {_layer(name) for name, _ in _modules() if "." in name} - _leaves()
    assert layers <= set(ALLOWED), layers - set(ALLOWED)


def test_the_composition_layer_is_imported_only_from_above():
    wrong = []
    for name, tree in _modules():
        for target in _imports(tree):
            users = COMPOSITION.get(_layer(target)) if target.startswith("orchestrator.") else None
            if users is not None and _layer(name) not in users | {_layer(target)}:
                wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_report_only_renders():
    """report/ imports nothing of the package but itself and errors: no file, index,
    service, journal or REST module, so gathering cannot creep back in."""
    wrong = [f"{name} imports {target}" for name, tree in _modules() if _layer(name) == "report"
             for target in _imports(tree) if target.startswith("orchestrator.")
             and _layer(target) not in ("report", "errors")]
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


def test_lazy_imports_only_at_the_cli_edge():
    """A function-level import hides a module's real dependencies: only cli/ defers its
    imports (to keep --help fast); elsewhere only platform-only modules and the plan's parsers."""
    wrong = []
    for name, tree in _modules():
        if _layer(name) == "cli" or name in LAZY_PENDING:
            continue
        deferred = PLATFORM_ONLY | DEFERRED_BY_OWNER.get(_layer(name), set())
        wrong += [f"{name} imports {t} inside a function" for t in _lazy_imports(tree)
                  if t.split(".")[0] not in deferred]
    assert not wrong, "\n".join(wrong)


def test_the_lazy_import_exceptions_are_still_needed():
    names = dict(_modules())
    stale = [m for m in LAZY_PENDING
             if m not in names or not any(True for _ in _lazy_imports(names[m]))]
    assert not stale, f"remove from LAZY_PENDING: {stale}"


def test_no_module_is_over_the_line_limit():
    """One noun per file: a module reads in one sitting."""
    lengths = {str(p.relative_to(PACKAGE.parent)): len(p.read_text().splitlines())
               for p in PACKAGE.rglob("*.py")}
    over = {p: n for p, n in lengths.items() if n > MAX_LINES and p not in TOO_LONG_PENDING}
    assert not over, over
    stale = [p for p in TOO_LONG_PENDING if lengths.get(p, 0) <= MAX_LINES]
    assert not stale, f"remove from TOO_LONG_PENDING: {stale}"


def test_steps_never_decide_dry_run():
    """Dry-run lives in host/changes.py: no step reads a `dry` flag."""
    for path in (PACKAGE / "steps").glob("*.py"):
        text = path.read_text()
        assert ".dry" not in text and "dry_run" not in text, path.name
