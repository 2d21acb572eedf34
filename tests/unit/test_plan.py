"""Plans that load: typed specs, defaults from the schema, path resolution, lines, cross-checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path, PureWindowsPath

import pytest

from orchestrator.errors import ExitCode, InputError
from orchestrator.plan import (MAX_PLAN_BYTES, CredentialsSpec, Manager, Plan, PlanError,
                               format_path, load_plan, parse_plan, plan_schema, step_kinds)

PLANS = Path(__file__).resolve().parents[1] / "data" / "plans"
GOOD = sorted(PLANS.glob("*.yaml"))

MINIMAL = """\
version: 1
service: {name: orthanc, binary: /usr/sbin/Orthanc, config: /etc/orthanc/}
steps:
"""


def steps(*lines: str) -> str:
    return MINIMAL + "".join(f"  - {line}\n" for line in lines)


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_example_plans_load_and_start_with_the_editor_header(path):
    assert path.read_text().startswith("# yaml-language-server: $schema=")
    plan = load_plan(path)
    assert isinstance(plan, Plan) and plan.version == 1 and plan.steps
    assert [s.index for s in plan.steps] == list(range(len(plan.steps)))
    # The header's relative schema path points at the shipped schema.
    ref = path.read_text().splitlines()[0].split("$schema=", 1)[1]
    assert (path.parent / ref).resolve() == (Path(__file__).resolve().parents[2]
                                              / "orchestrator" / "data" / "plan.schema.json")


def test_design_example_is_typed_with_defaults_and_lines():
    plan = load_plan(PLANS / "debian-systemd.yaml")
    svc = plan.service
    assert (svc.name, svc.manager, svc.user) == ("orthanc", Manager.AUTO, "orthanc")
    assert svc.binary == Path("/usr/sbin/Orthanc") and svc.config == Path("/etc/orthanc")
    assert svc.url == "http://127.0.0.1:8042" and svc.stop_grace == 30
    assert svc.credentials == CredentialsSpec("orthanc", "ORTHANC_PASSWORD", None)
    assert plan.state_dir is None and plan.source == PLANS / "debian-systemd.yaml"
    got = [(s.kind, s.options, s.line) for s in plan.steps]
    assert got == [
        ("preflight", {"allow_hazards": []}, 13),
        ("stop-service", {"timeout": 120}, 14),
        ("snapshot", {"link_attachments": False, "allow_non_sqlite": False}, 15),
        ("relocate", {"to": Path("/var/lib/orthanc/db-v6")}, 16),
        ("upgrade", {"timeout": 7200, "stall": 600}, 17),
        ("start-service", {"timeout": 120}, 18),
        ("health-check", {"timeout": 300, "expect": {"database_version": 6, "counts": True}}, 19),
    ]
    assert plan.raw["steps"][1] == {"stop-service": {"timeout": 120}}


def test_relative_paths_resolve_against_the_plan_folder_wherever_we_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = load_plan(PLANS / "process-relative.yaml")
    here = PLANS
    assert plan.state_dir == here / "state"
    svc = plan.service
    assert (svc.manager, svc.binary, svc.config) == (Manager.PROCESS, here / "bin/Orthanc",
                                                     here / "config/orthanc.json")
    assert (svc.pidfile, svc.log_file, svc.stop_grace) == (here / "run/orthanc.pid",
                                                           here / "logs/orthanc.log", 5.5)
    assert svc.credentials == CredentialsSpec("admin", None, here / "secrets/orthanc-pass")
    by_kind = {s.kind: s.options for s in plan.steps}
    assert by_kind["preflight"] == {"allow_hazards": ["non-sqlite-backend"], "min_free_mb": 0}
    assert by_kind["stop-service"] == {"timeout": 120}
    assert by_kind["snapshot"] == {"dir": here / "snapshots", "link_attachments": True,
                                   "allow_non_sqlite": False}
    assert by_kind["command"] == {"argv": ["cp", "-a", "data/old", "data/new"],
                                  "undo": ["rm", "-rf", "data/new"], "timeout": 60,
                                  "description": "copy the data aside"}
    assert by_kind["upgrade"] == {"timeout": 7200, "stall": 600, "log_file": here / "logs/upgrade.log"}
    assert by_kind["start-service"] == {"timeout": 120}  # `- start-service:` (null options)
    assert by_kind["health-check"] == {"timeout": 300,
                                       "expect": {"version": "1.12.8", "counts": False}}


def test_parse_plan_resolves_against_base_dir_or_cwd(tmp_path, monkeypatch):
    text = MINIMAL.replace("/usr/sbin/Orthanc", "bin/Orthanc") + "  - preflight\n"
    assert parse_plan(text, base_dir=tmp_path).service.binary == tmp_path / "bin/Orthanc"
    monkeypatch.chdir(tmp_path)
    assert parse_plan(text).service.binary == tmp_path / "bin/Orthanc"


def test_windows_paths_stay_as_written():
    plan = load_plan(PLANS / "windows.yaml")
    svc = plan.service
    assert svc.manager is Manager.WINDOWS
    assert PureWindowsPath(str(svc.binary)) == PureWindowsPath(
        r"C:\Program Files\Orthanc Server\Orthanc.exe")
    assert svc.install_dir == r"C:\Program Files\Orthanc Server"
    snap = next(s for s in plan.steps if s.kind == "snapshot")
    assert str(snap.options["dir"]) == r"\\backup-host\orthanc\snapshots"


def test_anchors_and_merge_keys_in_moderation():
    plan = load_plan(PLANS / "anchors.yaml")
    opts = {s.kind: s.options for s in plan.steps}
    assert opts["stop-service"] == {"timeout": 90} == opts["start-service"]
    assert opts["upgrade"] == {"timeout": 90, "stall": 300}
    # Shared YAML nodes do not become shared (mutable) option dicts.
    assert opts["stop-service"] is not opts["start-service"]


def test_dates_and_yaml_11_words_stay_what_the_schema_expects():
    text = steps("command: {argv: [echo, 2024-01-01], description: 2024-01-01}")
    opts = parse_plan(text).steps[0].options
    assert opts["argv"] == ["echo", "2024-01-01"] and opts["description"] == "2024-01-01"


def test_schema_is_valid_draft_2020_12_and_consistent():
    from jsonschema.validators import Draft202012Validator

    schema = plan_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    bare, keyed = schema["$defs"]["step"]["oneOf"]
    for kind in step_kinds():
        options = schema["$defs"][kind]
        assert keyed["properties"][kind] == {"$ref": f"#/$defs/{kind}"}
        assert options.get("additionalProperties") is False, kind
        # A kind may be written bare exactly when none of its options is required (relocate
        # requires one of `to` and `database`: an anyOf of requireds).
        required = options.get("required") or options.get("anyOf")
        assert (kind in bare["enum"]) == (not required), kind
    assert set(bare["enum"]) <= set(step_kinds())
    plan_schema()["title"] = "changed"  # callers get a copy
    assert plan_schema()["title"] != "changed"


def test_every_default_in_the_schema_is_valid_for_its_property():
    from jsonschema.validators import Draft202012Validator

    schema = plan_schema()

    def walk(node):
        if isinstance(node, dict):
            if "default" in node:
                sub = {k: v for k, v in node.items() if k != "default"}
                Draft202012Validator({**sub, "$defs": schema["$defs"]}).validate(node["default"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)


@pytest.mark.parametrize("path,expected", [
    ((), ""), (("service",), "service"), (("service", "credentials", "password"),
                                          "service.credentials.password"),
    (("steps", 2, "upgrade", "timeout"), "steps[2].upgrade.timeout"),
    (("service", "a key"), 'service["a key"]'), ((1,), "[1]"),
])
def test_format_path(path, expected):
    assert format_path(path) == expected


@pytest.mark.parametrize("body,line,message", [
    (["preflight", "upgrade"], 5, "steps[1]: upgrade runs on a running service: no stop-service"),
    (["stop-service", "start-service", "snapshot"], 6,
     "steps[2]: snapshot runs on a running service: steps[1] started it again"),
    (["stop-service", "upgrade"], 5, "steps[1]: upgrade has no start-service after it"),
    (["health-check"], 4, "steps[0]: health-check has no start-service before it"),
    (["stop-service", "health-check"], 5, "steps[1]: health-check on a stopped service"),
    (["stop-service", "upgrade", "relocate: {to: /srv/db-v7}", "start-service"], 6,
     "steps[2]: relocate comes after upgrade (steps[1])"),
])
def test_step_order_cross_checks_name_the_step_and_its_line(body, line, message):
    with pytest.raises(PlanError) as info:
        parse_plan(steps(*body), "p.yaml")
    assert info.value.message.startswith(f"p.yaml:{line}: {message}")
    assert info.value.exit_code == ExitCode.BAD_INPUT and info.value.hint


def test_commands_do_not_change_what_the_order_checks_assume():
    plan = parse_plan(steps("command: {argv: [apt-get, install, -y, orthanc]}", "stop-service",
                            "snapshot", "upgrade", "start-service", "health-check"))
    assert [s.kind for s in plan.steps][0] == "command"


@pytest.mark.parametrize("credentials,url,message", [
    ("{username: u, password_env: P, password_file: /p}", None,
     "service.credentials.password_file: give password_env or password_file, not both"),
    ("{password_env: P}", None, "service.credentials: a password source without a username"),
    ("{password_env: P}", "http://127.0.0.1:8042", "a password source without a username"),
    ("{username: u}", "http://127.0.0.1:99999", "service.url: bad URL"),
    ("{username: u}", "http://u:hunter2@127.0.0.1:8042",
     "service.url: an inline password is not accepted"),
])
def test_credential_cross_checks(credentials, url, message):
    svc = f"  credentials: {credentials}\n" + (f"  url: {url}\n" if url else "")
    text = MINIMAL.replace("steps:\n", "").replace(
        "service: {name: orthanc, binary: /usr/sbin/Orthanc, config: /etc/orthanc/}\n",
        "service:\n  name: orthanc\n  binary: /b\n  config: /c\n" + svc) + "steps: [preflight]\n"
    with pytest.raises(PlanError) as info:
        parse_plan(text, "p.yaml")
    assert message in info.value.message
    assert "hunter2" not in info.value.message + (info.value.hint or "")


def test_a_username_in_the_url_is_enough_for_a_password_source():
    text = ("version: 1\nservice:\n  name: o\n  binary: /b\n  config: /c\n"
            "  url: http://admin@127.0.0.1:8042\n  credentials: {password_env: P}\n"
            "steps: [preflight]\n")
    assert parse_plan(text).service.credentials == CredentialsSpec(None, "P", None)


def test_every_problem_is_listed_sorted_by_line():
    text = ("version: 2\nservice:\n  name: o\n  binary: 5\n  config: /c\n  colour: red\n"
            "steps: [preflight, {upgrade: {timeout: 0}}]\n")
    with pytest.raises(PlanError) as info:
        parse_plan(text, "p.yaml")
    got = [(p.line, format_path(p.path)) for p in info.value.problems]
    assert got == [(1, "version"), (4, "service.binary"), (6, "service.colour"),
                   (7, "steps[1].upgrade.timeout")]
    assert info.value.message.startswith("p.yaml:1: version: must be 1, found 2 (and 3 more)")


def test_errors_never_echo_values_under_credentials():
    text = MINIMAL.replace("config: /etc/orthanc/}", "config: /c, credentials: hunter2}") + \
        "  - preflight\n"
    with pytest.raises(InputError) as info:
        parse_plan(text)
    assert "credentials: expected a mapping, found a string" in info.value.message
    assert "hunter2" not in info.value.message + (info.value.hint or "")


def test_size_limit_applies_to_text_too():
    with pytest.raises(InputError, match="larger than"):
        parse_plan("#" * (MAX_PLAN_BYTES + 1))
    with pytest.raises(InputError, match="larger than"):
        parse_plan("é" * (MAX_PLAN_BYTES // 2 + 1))  # 2 bytes each in UTF-8


def test_importing_plan_does_not_import_yaml_or_jsonschema():
    code = ("import sys, orchestrator.plan, orchestrator.cli; "
            "print(sorted(m for m in ('yaml', 'jsonschema') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.replace("'", '"')) == []


def test_relative_paths_are_normalised(tmp_path):
    text = MINIMAL.replace("/usr/sbin/Orthanc", "../bin/./Orthanc").replace(
        "/etc/orthanc/", "/etc//orthanc/../orthanc/") + "  - preflight\n"
    svc = parse_plan(text, base_dir=tmp_path / "plans").service
    assert (svc.binary, svc.config) == (tmp_path / "bin" / "Orthanc", Path("/etc/orthanc"))


@pytest.mark.parametrize("to,refused", [("/var/lib/orthanc/db-v6", True),
                                        ("/var/lib/orthanc/db-v6/", True),
                                        ("/srv/index", True), ("/var/lib/orthanc/db-v7", False)])
def test_relocate_onto_the_folder_in_use_is_refused(to, refused):
    from types import SimpleNamespace

    from orchestrator.plan import check_against_config

    plan = parse_plan(steps("stop-service", f"relocate: {{to: '{to}'}}", "upgrade",
                            "start-service"), "p.yaml")
    config = SimpleNamespace(storage_dir=Path("/var/lib/orthanc/db-v6"), index_dir=Path("/srv/index"))
    if not refused:
        check_against_config(plan, config)
        return
    with pytest.raises(PlanError) as info:
        check_against_config(plan, config)
    assert info.value.message.startswith("p.yaml:5: steps[1].relocate.to: ")
    assert "is the database folder in use" in info.value.message


def test_relocate_with_from_is_checked_against_its_source():
    from types import SimpleNamespace

    from orchestrator.plan import check_against_config

    if "from" not in plan_schema()["$defs"]["relocate"]["properties"]:
        pytest.skip("the schema has no relocate.from")
    config = SimpleNamespace(storage_dir=Path("/var/lib/orthanc/db-v6"),
                             index_dir=Path("/var/lib/orthanc/db-v6"))
    ok = parse_plan(steps("stop-service", "relocate: {from: /var/lib/orthanc/db-v5, "
                          "to: /var/lib/orthanc/db-v6}", "upgrade", "start-service"), "p.yaml")
    check_against_config(ok, config)  # recovering an old folder into the one in use: the engine decides
    bad = parse_plan(steps("stop-service", "relocate: {from: /srv/a, to: /srv/a/}", "upgrade",
                           "start-service"), "p.yaml")
    with pytest.raises(PlanError, match="steps\\[1\\].relocate.to: /srv/a is the folder it copies from"):
        check_against_config(bad, config)
