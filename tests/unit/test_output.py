"""Live output: timestamped plain lines off a terminal, the output levels, narrow encodings."""

from __future__ import annotations

import io
import re

from orchestrator import progress
from orchestrator.progress import Level, Progress, StepProgress, fit

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z "


class Narrow(io.StringIO):
    def __init__(self, encoding: str):
        super().__init__()
        self._encoding = encoding

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._encoding


def test_fit_keeps_what_the_encoding_prints_and_replaces_glyphs_with_ascii():
    assert fit("|███▒▒| 1.0s — done…", Narrow("utf-8")) == "|███▒▒| 1.0s — done…"
    assert fit("|███▒▒| x", Narrow("cp1252")) == "|###==| x"
    assert fit("é and ☃", Narrow("ascii")) == "? and ?"
    assert fit("café — ok", Narrow("cp1252")) == "café — ok"  # cp1252 has both


def test_step_lines_off_a_terminal_are_timestamped_and_flushed_one_by_one():
    out = Narrow("cp1252")
    show = StepProgress(out, level=Level.NORMAL)
    show("step-started", step="stop-service", text="stop the service")
    show("step-line", step="upgrade", line="Upgrading the database █")
    show("step-finished", step="stop-service", status="done", seconds=0.5, detail="stopped",
         changes=["stop the process service"])
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and all(re.match(STAMP, ln) for ln in lines), lines
    assert lines[0].endswith("-> stop-service: stop the service")
    assert lines[1].endswith("| Upgrading the database #")


def test_quiet_writes_nothing_and_verbose_adds_the_changes():
    quiet, verbose = io.StringIO(), io.StringIO()
    for out, level in ((quiet, Level.QUIET), (verbose, Level.VERBOSE)):
        StepProgress(out, level=level)("step-finished", step="relocate", status="done",
                                       seconds=0.1, detail="ok", changes=["copy index"])
    assert quiet.getvalue() == ""
    assert verbose.getvalue().splitlines()[-1].endswith("- copy index")


def test_the_level_set_by_the_command_line_is_the_default(monkeypatch):
    monkeypatch.setattr(progress, "_LEVEL", [Level.NORMAL])
    progress.set_level(Level.QUIET)
    out = io.StringIO()
    StepProgress(out)("step-started", step="x", text="y")
    assert out.getvalue() == ""


def test_transfer_progress_off_a_terminal_is_a_plain_line_now_and_then_and_at_the_end():
    now = [0.0]
    out = Narrow("ascii")
    bar = Progress("copy", stream=out, plain=True, clock=lambda: now[0])
    for i in range(1, 11):
        now[0] = i * 1.0
        bar.update(i, 10)
    bar.close()
    lines = out.getvalue().splitlines()
    # the first update, one PLAIN_INTERVAL later, and the end (once)
    assert [ln.split(" ", 1)[1].split("  ")[1].split("]")[1].split()[0] for ln in lines] == \
        ["1/10", "6/10", "10/10"], lines
    assert all(re.match(STAMP, ln) for ln in lines)
