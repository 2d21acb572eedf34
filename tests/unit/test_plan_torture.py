"""Bad plans: each refused with one line naming file, line and key path; through the CLI too.

The textual cases are files in tests/data/plans/bad/ whose first line says what
the error must start with (`# expect: LINE: key.path: message`); the rest
(bombs, huge and binary files) are generated here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.errors import ExitCode, InputError
from orchestrator.plan import MAX_DEPTH, MAX_NODES, MAX_PLAN_BYTES, load_plan, parse_plan

BAD = Path(__file__).resolve().parents[1] / "data" / "plans" / "bad"
BAD_FILES = sorted(BAD.glob("*.yaml"))

BOMB = "\n".join(
    [f"l0: &l0 [{', '.join(['lol'] * 9)}]"]
    + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]) + "\n"

GOOD = """version: 1
state_dir: state
service: {name: orthanc, binary: /usr/sbin/Orthanc, config: /etc/orthanc/}
steps: [preflight]
"""


def expected_prefix(path: Path) -> str:
    expect = path.read_text().splitlines()[0].removeprefix("# expect: ")
    return f"{path}:{expect}" if expect[0].isdigit() else f"{path}: {expect}"


@pytest.mark.parametrize("path", BAD_FILES, ids=lambda p: p.stem)
def test_bad_plan_files(path):
    with pytest.raises(InputError) as info:
        load_plan(path)
    assert info.value.message.startswith(expected_prefix(path))
    assert "\n" not in info.value.message and info.value.hint
    assert info.value.exit_code == ExitCode.BAD_INPUT


def generated_cases(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the message must contain after 'file')."""
    def write(name: str, data: bytes | str) -> Path:
        p = tmp / name
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        return p

    big = tmp / "huge.yaml"
    with open(big, "wb") as f:  # sparse: 50 MB by its size, nothing written
        f.truncate(50 * 1024 * 1024)
    return {
        "alias bomb": (write("bomb.yaml", BOMB), f":5: refused: more than {MAX_NODES} YAML nodes"),
        "recursive alias": (write("rec.yaml", "a: &a [1, *a]\n"), ":1: refused: alias *a refers"),
        "deep nesting": (write("deep.yaml", "[" * 50_000), f":1: refused: nested more than {MAX_DEPTH}"),
        "50 MB file": (big, f": the plan is larger than {MAX_PLAN_BYTES} bytes (52428800 bytes)"),
        "binary garbage": (write("garbage.yaml", bytes(range(256)) * 4), ":1: binary data (a NUL byte"),
        "not UTF-8": (write("latin1.yaml", "version: 1\n# café\n".encode("latin-1")),
                      ":2: not UTF-8 text (byte 0xe9 at offset 16)"),
        "control character": (write("ctl.yaml", "version: 1\x07\n"), ":1: YAML syntax: unacceptable"),
        "empty file": (write("empty.yaml", ""), ": the plan is empty"),
        "folder": (tmp, ": is a folder, not a plan file"),
        "missing file": (tmp / "nope.yaml", ": cannot read the plan: No such file"),
        "python tag": (write("tag.yaml", "version: !!python/object/apply:os.system [true]\n"),
                       ":1: YAML: could not determine a constructor"),
        "bad int tag": (write("int.yaml", "version: !!int one\n"), ":1: YAML: cannot read this"),
        "nan timeout": (write("nan.yaml", GOOD.replace("[preflight]", "[{upgrade: {timeout: .nan}}]")),
                        ":4: steps[0].upgrade.timeout: must be a finite number"),
        "two documents": (write("docs.yaml", GOOD + "---\n" + GOOD), ":5: YAML syntax: expected a single"),
    }


def test_generated_torture(tmp_path):
    for name, (path, tail) in generated_cases(tmp_path).items():
        with pytest.raises(InputError) as info:
            load_plan(path)
        assert info.value.message.startswith(f"{path}{tail}"), name
        assert "\n" not in info.value.message and info.value.hint, name


def test_a_device_that_never_ends_is_refused_before_reading():
    """Issue 12: a plan that is not a regular file is refused at once (it was read up to the
    size limit before; a FIFO then hung)."""
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    with pytest.raises(InputError, match="character device; the plan must be a regular file"):
        load_plan("/dev/zero")


def test_a_fifo_plan_is_refused_at_once(tmp_path):
    fifo = tmp_path / "plan.yaml"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="regular file"):
        load_plan(fifo)


def test_alias_bomb_is_refused_while_composing(monkeypatch):
    """The bomb would be 10**9 nodes: refused once the count passes MAX_NODES, before any
    data is constructed (a measured figure is in the report: about a millisecond)."""
    import orchestrator.plan.document as plan_mod

    constructed = []
    loader = plan_mod.loader_class()
    monkeypatch.setattr(loader, "construct_document",
                        lambda self, node: constructed.append(node), raising=True)
    with pytest.raises(InputError, match="refused"):
        parse_plan(BOMB)
    assert constructed == []


def test_moderate_aliases_are_fine():
    text = ("version: 1\nservice: {name: o, binary: /b, config: /c}\n"
            "steps: [{stop-service: &t {timeout: 5}}, {start-service: *t}]\n")
    plan = parse_plan(text)
    assert [s.options for s in plan.steps] == [{"timeout": 5}, {"timeout": 5}]


def cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return info.value.code, out, err


def tree(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1)
                  for p in root.rglob("*"))


def all_cases(tmp: Path) -> list[tuple[str, Path, str]]:
    src = tmp / "src"
    src.mkdir()
    cases = [(p.stem, p, expected_prefix(p)) for p in BAD_FILES]
    cases += [(name, p, f"{p}{tail}") for name, (p, tail) in generated_cases(src).items()]
    return cases


@pytest.mark.parametrize("as_json", [False, True])
def test_every_bad_plan_through_the_cli(tmp_path, monkeypatch, capsys, as_json):
    """exit 2, one error line naming the place (+ a hint line), no traceback, nothing written."""
    cases = all_cases(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    before = tree(tmp_path)
    for name, path, prefix in cases:
        code, out, err = cli(["validate", str(path)] + (["--json"] if as_json else []), capsys)
        assert code == ExitCode.BAD_INPUT, name
        lines = err.splitlines()
        assert lines[0] == "orchestrator: error: " + lines[0].removeprefix("orchestrator: error: ")
        assert lines[0].removeprefix("orchestrator: error: ").startswith(prefix), (name, lines)
        assert len(lines) == 2 and lines[1].startswith("  hint: "), (name, lines)
        assert "Traceback" not in err + out, name
        if as_json:
            import json

            doc = json.loads(out)
            assert doc["ok"] is False and doc["exit_code"] == 2 and doc["error"].startswith(prefix)
        else:
            assert out == "", name
    assert tree(tmp_path) == before
    assert not (work / "state").exists()


def test_validate_json_lists_every_problem(tmp_path, capsys):
    import json

    p = tmp_path / "p.yaml"
    p.write_text("version: 3\nservice: {name: o, binary: /b, config: /c, pasword: x}\n"
                 "steps: [preflite]\n")
    code, out, _ = cli(["validate", str(p), "--json"], capsys)
    doc = json.loads(out)
    assert code == 2
    assert [(q["line"], q["path"]) for q in doc["problems"]] == [
        (1, "version"), (2, "service.pasword"), (3, "steps[0]")]
    assert "did you mean 'preflight'?" in doc["problems"][2]["hint"]
