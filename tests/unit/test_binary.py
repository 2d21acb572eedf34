"""The Orthanc binary: --version parsing from captured output, the schema table."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import CommandError, Completed, InputError
from orchestrator.host.runner import FakeRunner
from orchestrator.orthanc.binary import (OrthancVersion, binary_version, expected_schema,
                                         parse_version, parse_version_output, schema_is_known)

DATA = Path(__file__).parent.parent / "data" / "orthanc"


@pytest.mark.parametrize("name, version", [
    ("version-1.10.1-debian.txt", "1.10.1"),
    ("version-1.12.8-docker.constructed.txt", "1.12.8"),
    ("version-mainline-windows.constructed.txt", "mainline"),
    ("version-1.12.7-debian13.txt", "1.12.7"),
])
def test_parse_captured_outputs(name, version):
    parsed = parse_version_output((DATA / name).read_text())
    assert str(parsed) == version


def test_mainline_is_newer_than_any_release_and_flagged():
    mainline = parse_version("mainline")
    assert mainline.is_mainline and mainline > parse_version("1.99.99")
    assert not parse_version("1.10.1").is_mainline


def test_ordering_ignores_the_raw_text():
    assert parse_version("1.10.1") < parse_version("1.12.0") < parse_version("1.12.8")
    assert parse_version("1.9.2") < parse_version("1.10.0")
    assert parse_version("1.12") == OrthancVersion(1, 12, 0)
    assert parse_version("1.12.4+dfsg") == OrthancVersion(1, 12, 4)
    assert str(OrthancVersion(1, 2, 3)) == "1.2.3"


@pytest.mark.parametrize("text", ["", "\n\n", "Orthanc\n", "Usage: Orthanc [OPTION]",
                                  "/usr/bin/python3 version x"])
def test_unreadable_output_is_input_error(text):
    with pytest.raises(InputError, match="cannot read an Orthanc version|is not Orthanc's"):
        parse_version_output(text)


def test_another_programs_version_is_refused():
    """Issue 12: `binary: /bin/true` passed validate and plan ("Orthanc 9.1.0")."""
    with pytest.raises(InputError, match="is not Orthanc's"):
        parse_version_output((DATA / "version-not-orthanc-coreutils-true.txt").read_text())


@pytest.mark.parametrize("version, schema", [
    ("0.3.1", 2), ("0.4.0", 3), ("0.7.2", 3), ("0.7.3", 4), ("0.8.4", 4), ("0.8.5", 5),
    ("0.9.4", 5), ("0.9.5", 6), ("1.10.1", 6), ("1.12.8", 6), ("1.13.0", 6), ("mainline", 6),
])
def test_expected_schema_follows_the_table(version, schema):
    assert expected_schema(parse_version(version)) == schema


def test_schema_known_only_up_to_the_table():
    assert schema_is_known(parse_version("1.13.9"))
    assert not schema_is_known(parse_version("1.14.0"))
    assert not schema_is_known(parse_version("mainline"))


def test_binary_version_runs_the_binary_with_a_fake_runner():
    out = (DATA / "version-1.10.1-debian.txt").read_text()
    runner = FakeRunner({("/opt/Orthanc", "--version"): Completed((), 0, out, "")})
    assert binary_version("/opt/Orthanc", runner) == OrthancVersion(1, 10, 1)
    assert runner.calls == [("/opt/Orthanc", "--version")]


def test_binary_version_failures():
    runner = FakeRunner({("/opt/Orthanc", "--version"): Completed((), 127, "", "no such lib")})
    with pytest.raises(CommandError) as info:
        binary_version("/opt/Orthanc", runner)
    assert info.value.completed.returncode == 127
    runner = FakeRunner({("/bin/true", "--version"): Completed((), 0, "", "")})
    with pytest.raises(InputError):
        binary_version("/bin/true", runner)


def test_the_real_binary_if_installed():
    from orchestrator.host.runner import RealRunner
    if not Path("/usr/sbin/Orthanc").exists():
        pytest.skip("Orthanc is not installed")
    version = binary_version("/usr/sbin/Orthanc", RealRunner())
    assert version.major == 1 and expected_schema(version) == 6
