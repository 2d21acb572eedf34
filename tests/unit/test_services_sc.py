"""Pure parsers of sc.exe output, on the constructed outputs in tests/data/sc (see its README)."""

from pathlib import Path

import pytest

from orchestrator.services.sc import ScError, ScState, parse_error, parse_query

DATA = Path(__file__).resolve().parents[1] / "data" / "sc"


def text(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name, state, pid", [
    ("queryex-running.txt", ScState.RUNNING, 4956),
    ("queryex-running-crlf.txt", ScState.RUNNING, 4956),
    ("queryex-running-de.txt", ScState.RUNNING, 4956),
    ("queryex-running-new-pid.txt", ScState.RUNNING, 5120),
    ("queryex-stopped.txt", ScState.STOPPED, 0),
    ("queryex-stop-pending.txt", ScState.STOP_PENDING, 4956),
    ("queryex-start-pending.txt", ScState.START_PENDING, 5120),
    ("start-start-pending.txt", ScState.START_PENDING, 5120),
    ("stop-stop-pending.txt", ScState.STOP_PENDING, None),  # sc stop prints no PID
])
def test_state_and_pid(name, state, pid):
    q = parse_query(text(name))
    assert q is not None
    assert q.state == state and q.state_code == int(state)
    assert q.pid == pid
    assert q.name == "Orthanc"
    assert parse_error(text(name)) is None


def test_numbers_in_hex_and_decimal():
    q = parse_query(text("queryex-stop-pending.txt"))
    assert q.checkpoint == 2 and q.wait_hint_ms == 30000
    q = parse_query(text("queryex-stopped-1067.txt"))
    assert q.state == ScState.STOPPED and q.win32_exit_code == 1067
    assert "WIN32_EXIT_CODE 1067" in q.describe()


def test_localised_block_is_read_by_position():
    de = parse_query(text("queryex-running-de.txt"))
    en = parse_query(text("queryex-running.txt"))
    assert (de.state, de.pid, de.win32_exit_code, de.wait_hint_ms) == \
        (en.state, en.pid, en.win32_exit_code, en.wait_hint_ms)


def test_unknown_state_number_is_kept():
    q = parse_query(text("queryex-running.txt").replace(": 4  RUNNING", ": 9  SOMETHING"))
    assert q.state is None and q.state_code == 9 and "state 9" in q.describe()


@pytest.mark.parametrize("name, code", [
    ("stop-1062.txt", ScError.SERVICE_NOT_ACTIVE),
    ("stop-1062-de.txt", ScError.SERVICE_NOT_ACTIVE),
    ("stop-1061.txt", ScError.SERVICE_CANNOT_ACCEPT_CTRL),
    ("stop-1060.txt", ScError.SERVICE_DOES_NOT_EXIST),
    ("queryex-1060.txt", ScError.SERVICE_DOES_NOT_EXIST),
    ("stop-5.txt", ScError.ACCESS_DENIED),
    ("start-1056.txt", ScError.SERVICE_ALREADY_RUNNING),
    ("start-1053.txt", ScError.SERVICE_REQUEST_TIMEOUT),
])
def test_error_codes(name, code):
    assert parse_error(text(name)) == code
    assert parse_error(text(name), returncode=38) == code  # the output wins over a truncated exit code
    assert parse_query(text(name)) is None


def test_error_falls_back_to_the_exit_code():
    assert parse_error("", returncode=1060) == 1060
    assert parse_error("", returncode=0) is None


def test_garbage_is_no_block():
    assert parse_query("") is None
    assert parse_query("hello\nworld\n") is None
    assert parse_query("SERVICE_NAME: x\n        TYPE : nothing\n") is None
