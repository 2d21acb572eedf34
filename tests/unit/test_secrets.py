"""Secrets stay in: URL credentials redacted in every form, children get a scrubbed
environment (real child processes), and a Hypothesis sweep over generated passwords."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import CommandError, InputError, OrchestratorError, StepError
from orchestrator.host.runner import RealRunner, child_env
from orchestrator.journal import Event, Journal
from orchestrator.orthanc.credentials import resolve, split_url
from orchestrator.secrets import parse_authority, redact_text, redact_url, scrub

RESERVED = "/#?@:%[]!$&'()*+,;= \"\\"
VAR = "ORCHESTRATOR_TEST_PASSWORD"

DUMP = textwrap.dedent("""
    import json, os, sys
    doc = json.dumps({"argv": sys.argv, "environ": dict(os.environ)})
    open(sys.argv[1], "w").write(doc)
    print(doc)
    print(doc, file=sys.stderr)
""")


def _forms(password: str) -> list[str]:
    """The password as written raw and escaped: none may be shown."""
    return [password, quote(password, safe=""), quote(password)]


def _leaks(text: str, password: str) -> bool:
    return any(f in text for f in _forms(password))


@pytest.mark.parametrize("ch", list(RESERVED))
@pytest.mark.parametrize("escaped", [False, True])
def test_a_password_with_each_reserved_character_is_redacted_and_parsed_whole(ch, escaped):
    password = f"s3{ch}cr{ch}et"
    written = quote(password, safe="") if escaped else password
    url = f"http://admin:{written}@127.0.0.1:8042/orthanc/"
    shown = redact_url(url)
    assert not _leaks(shown, password) and "cr" not in shown.split("@")[0]
    assert shown == "http://admin:***@127.0.0.1:8042/orthanc/"
    clean, creds = split_url(url)
    assert clean == "http://127.0.0.1:8042/orthanc" and creds.username == "admin"
    if escaped or ch != "%":
        assert creds.password == password
    # The same URL inside any message.
    assert not _leaks(redact_text(f"cannot reach {url}: refused"), password)
    assert not _leaks(str(OrchestratorError(f"GET {url}/system failed", hint=f"try {url}")),
                      password)


@pytest.mark.parametrize("ch", list(RESERVED))
def test_the_bad_url_error_never_echoes_the_password(ch):
    password = f"s3{ch}cr{ch}et"
    for url in (f"http://admin:{password}@127.0.0.1:99999", f"ftp://admin:{password}@h",
                f"http://admin:{password}@", f"http://admin:{password}@bad host:1"):
        with pytest.raises(InputError) as err:
            split_url(url)
        text = err.value.message + (err.value.hint or "")
        assert not _leaks(text, password), text
        assert "bad URL" in text


def test_a_user_only_token_and_ipv6_are_handled():
    assert redact_url("https://tok3n@[::1]:8042/x") == "https://***@[::1]:8042/x"
    assert split_url("http://u:p@[::1]:8042")[0] == "http://[::1]:8042"
    assert redact_url("http://127.0.0.1:8042") == "http://127.0.0.1:8042"
    assert parse_authority("no url here") is None
    assert scrub("a hunter2 b hunter%32", ["hunter2"]) == "a *** b hunter%32"


def test_children_get_a_scrubbed_environment_and_output(tmp_path, monkeypatch):
    monkeypatch.setenv(VAR, "Zq9-pass/word")
    monkeypatch.setenv("KEEP_ME", "yes")
    runner = RealRunner(hidden_env=[VAR])
    done = runner.run([sys.executable, "-c", DUMP, str(tmp_path / "dump")], timeout=60)
    seen = json.loads((tmp_path / "dump").read_text())
    assert VAR not in seen["environ"] and seen["environ"]["KEEP_ME"] == "yes"
    assert "Zq9-pass/word" not in done.stdout + done.stderr
    # Given on purpose (the child that needs it): passed, and masked in what it prints.
    done = runner.run([sys.executable, "-c", DUMP, str(tmp_path / "dump")], timeout=60,
                      env={VAR: os.environ[VAR]})
    assert json.loads((tmp_path / "dump").read_text())["environ"][VAR] == "Zq9-pass/word"
    assert "Zq9-pass/word" not in done.stdout and "***" in done.stdout
    with pytest.raises(CommandError, match="holds a secret") as err:
        runner.run(["echo", "--password=Zq9-pass/word"], timeout=10)
    assert "Zq9" not in err.value.message
    runner.hide("KEEP_ME")
    runner.run([sys.executable, "-c", DUMP, str(tmp_path / "dump")], timeout=60)
    assert "KEEP_ME" not in json.loads((tmp_path / "dump").read_text())["environ"]
    assert child_env([VAR], {"A": "1"}, base={VAR: "x", "B": "2"}) == {"B": "2", "A": "1"}


PASSWORDS = st.text(alphabet=st.sampled_from(RESERVED + "abcXYZ019-_.~é"), min_size=4,
                    max_size=24).map(lambda s: "Zq9" + s)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(password=PASSWORDS, escaped=st.booleans())
def test_no_generated_password_reaches_argv_environ_output_journal_or_files(tmp_path, password,
                                                                            escaped):
    written = quote(password, safe="") if escaped else password
    url = f"http://admin:{written}@127.0.0.1:8042"
    old = os.environ.get(VAR)
    os.environ[VAR] = password
    try:
        clean, creds = resolve(url, use_netrc=False)
        assert creds.password == (password if escaped or "%" not in password else creds.password)
        clean2, creds2 = resolve(clean, username="admin", password_env=VAR, use_netrc=False)
        assert creds2.password == password and repr(creds2).count("***") == 1
        errors = []
        for bad in (url.replace(":8042", ":99999"), "ftp" + url[4:], url + " x"):
            try:
                split_url(bad)
            except InputError as exc:
                errors.append(exc)
        errors.append(StepError(f"GET {url}/system: refused", hint=f"check {url}"))
        journal = Journal(tmp_path / f"j-{os.getpid()}.journal")
        for exc in errors:
            journal.append(Event.STEP_FAILED, step="s", error=exc.message, hint=exc.hint)
        runner = RealRunner(hidden_env=[VAR])
        dump = tmp_path / "dump"
        done = runner.run([sys.executable, "-c", DUMP, str(dump), clean, redact_url(url)],
                          timeout=60)
        shown = [done.stdout, done.stderr, " ".join(done.argv), dump.read_text(),
                 journal.path.read_text(), clean, clean2, redact_url(url), repr(creds)]
        shown += [e.message + (e.hint or "") for e in errors]
        for text in shown:
            assert not _leaks(text, password), text
        journal.path.unlink()
    finally:
        if old is None:
            os.environ.pop(VAR, None)
        else:
            os.environ[VAR] = old


def test_a_common_short_password_does_not_break_commands_naming_the_service(monkeypatch, tmp_path):
    """Orthanc's default user is orthanc/orthanc: a password equal to the service's name must
    not make the runner refuse `systemctl ... orthanc.service` or blank its output (seen on a
    real Debian host: preflight refused to read the unit's state). The child still never
    sees the variable."""
    monkeypatch.setenv(VAR, "orthanc")
    runner = RealRunner(hidden_env=[VAR])
    done = runner.run([sys.executable, "-c", DUMP, str(tmp_path / "dump"), "orthanc.service"],
                      timeout=60)
    seen = json.loads((tmp_path / "dump").read_text())
    assert VAR not in seen["environ"]
    assert "orthanc.service" in seen["argv"]
    done = runner.run([sys.executable, "-c", "print('Id=orthanc.service')"], timeout=60)
    assert done.stdout.strip() == "Id=orthanc.service"
