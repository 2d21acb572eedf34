"""Credentials: URL splitting and redaction, the resolution order, password files, netrc."""

from __future__ import annotations

import os
import sys

import pytest

from orchestrator.errors import InputError
from orchestrator.orthanc.credentials import (Credentials, read_password_file, redact_url,
                                              resolve, split_url)


@pytest.mark.parametrize("url, clean, creds", [
    ("http://127.0.0.1:8042", "http://127.0.0.1:8042", None),
    ("https://u:p%40ss@host:8443/orthanc/", "https://host:8443/orthanc", ("u", "p@ss")),
    ("http://[::1]:8042", "http://[::1]:8042", None),
    ("http://user@host", "http://host", ("user", "")),
])
def test_split_url(url, clean, creds):
    got_clean, got = split_url(url)
    assert got_clean == clean
    assert (got.username, got.password) == creds if creds else got is None


@pytest.mark.parametrize("url", ["ftp://host", "host:8042", "http://host:99999", "http://"])
def test_split_url_refuses_bad_urls_without_echoing_a_password(url):
    with pytest.raises(InputError) as info:
        split_url(url.replace("://", "://u:s3cret@") if "://" in url else url)
    assert "s3cret" not in info.value.message


def test_redact_url():
    assert redact_url("http://u:s3cret@h:1/x") == "http://u:***@h:1/x"
    assert redact_url("http://h:1") == "http://h:1"
    assert "s3cret" not in redact_url("http://u:s3cret@h:bad/x")


def test_repr_hides_the_password():
    assert "s3cret" not in repr(Credentials("u", "s3cret"))


def test_resolution_order(tmp_path):
    env = {"PW": "from-env", "NETRC": str(tmp_path / "netrc")}
    (tmp_path / "netrc").write_text("machine h login n password from-netrc\n")
    os.chmod(tmp_path / "netrc", 0o600)
    assert resolve("http://u:from-url@h", username="x", password_env="PW", environ=env)[1] == \
        Credentials("x", "from-env")
    assert resolve("http://u:from-url@h", environ=env)[1] == Credentials("u", "from-url")
    assert resolve("http://h", environ=env)[1] == Credentials("n", "from-netrc")
    assert resolve("http://other", environ=env)[1] is None
    with pytest.raises(InputError, match="not set"):
        resolve("http://h", username="u", password_env="MISSING", environ=env)
    with pytest.raises(InputError, match="without a username"):
        resolve("http://h", password_env="PW", environ=env)


def test_password_file_must_be_private(tmp_path):
    f = tmp_path / "pw"
    f.write_text("s3cret\n")
    os.chmod(f, 0o644)
    if sys.platform != "win32":  # Windows: ACLs, not mode bits, say who may read it
        with pytest.raises(InputError, match="readable by others"):
            read_password_file(f)
    os.chmod(f, 0o600)
    assert read_password_file(f) == "s3cret"
    assert resolve("http://h", username="u", password_file=f, environ={})[1] == \
        Credentials("u", "s3cret")
