"""Load a plan: a file or text -> a checked, typed `Plan`, or every problem with its line.

The pipeline: bounded read, UTF-8 decode, the YAML document (`document`), the
JSON Schema (`schema`), the rules (`rules`), then the typed plan (`normalize`).
"""

from __future__ import annotations

import stat
from pathlib import Path

from orchestrator.errors import InputError
from orchestrator.paths import read_regular_file
from orchestrator.plan.document import read_yaml
from orchestrator.plan.model import Plan
from orchestrator.plan.normalize import typed_plan
from orchestrator.plan.problems import PlanError, format_path, kind_of
from orchestrator.plan.rules import rule_problems
from orchestrator.plan.schema import finite_problems, schema_problems

MAX_PLAN_BYTES = 1 << 20  # 1 MiB: a real plan is a few hundred bytes


def load_plan(path: str | Path) -> Plan:
    """Read, check and type the plan at `path`; raise InputError (exit 2) on any problem."""
    p = Path(path)
    shown = str(path)
    try:
        st = p.stat()
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"{shown}: is a folder, not a plan file",
                             hint="give the plan's YAML file, e.g. playbooks/debian-systemd.yaml")
        if st.st_size > MAX_PLAN_BYTES:
            raise _too_big(shown, st.st_size)
        # Bounded and non-blocking: a FIFO or a device is refused at once instead of hanging.
        data = read_regular_file(p, MAX_PLAN_BYTES, what="plan")
    except OSError as exc:
        raise InputError(f"{shown}: cannot read the plan: {exc.strerror or exc}",
                         hint="check the path and its permissions") from exc
    if len(data) > MAX_PLAN_BYTES:
        raise _too_big(shown, None)
    return parse_plan(_decode(data, shown), shown, base_dir=p.absolute().parent)


def parse_plan(text: str, source: str = "<plan>", *, base_dir: Path | None = None) -> Plan:
    """Check and type a plan given as text; relative paths resolve against `base_dir`
    (default: the current folder). Raise InputError (or PlanError) on any problem."""
    if len(text) > MAX_PLAN_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_PLAN_BYTES:
        raise _too_big(source, None)
    raw, lines = read_yaml(text, source)
    if raw is None:
        raise InputError(f"{source}: the plan is empty",
                         hint="start from one of the example plans in playbooks/")
    if not isinstance(raw, dict):
        raise InputError(f"{source}:{lines[()]}: the plan must be a mapping (version, service, "
                         f"steps), not {kind_of(raw)}",
                         hint="see docs/plans.md, or `orchestrator schema`")
    problems = finite_problems(raw, (), lines) + schema_problems(raw, lines)
    if not problems:
        problems = rule_problems(raw, lines)
    if problems:
        raise PlanError(source, sorted(problems, key=lambda pr: (pr.line or 0, format_path(pr.path))))
    base = base_dir if base_dir is not None else Path.cwd()
    return typed_plan(raw, lines, source, base)


def _decode(data: bytes, source: str) -> str:
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise InputError(f"{source}:{line}: binary data (a NUL byte at "
                         f"offset {nul}), not a YAML plan", hint="give the plan's YAML text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{source}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                         f"{exc.start})", hint="save the plan as UTF-8") from None


def _too_big(source: str, size: int | None) -> InputError:
    got = f" ({size} bytes)" if size is not None else ""
    return InputError(f"{source}: the plan is larger than {MAX_PLAN_BYTES} bytes{got}; refused "
                      "before parsing", hint="a plan is a short YAML file: is this the right file?")

