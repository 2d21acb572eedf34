"""The package step's plan rules and version reading (pure parts; the real thing runs in
tests/hosts/test_package_step*.py)."""

from __future__ import annotations

from orchestrator.plan.rules import rule_problems
from orchestrator.steps.package import upstream


def test_validate_refuses_a_package_step_before_the_copies():
    def problems(*steps):
        raw = {"service": {}, "steps": ["preflight", "stop-service", *steps]}
        return [p.message for p in rule_problems(raw, {})]

    pkg = {"package": {"version": "1.12.7+dfsg-4"}}
    assert problems("snapshot", pkg) == []
    assert problems({"relocate": {"to": "/x"}}, pkg) == []
    assert any("only copy of the index" in m for m in problems(pkg, "snapshot"))
    assert any("no snapshot or relocate before it" in m for m in problems(pkg))


def test_the_upstream_version_of_a_debian_version():
    assert upstream("1.12.7+dfsg-4") == "1.12.7"
    assert upstream("1:1.13.0+dfsg-1+b1") == "1.13.0"
    assert upstream("1.10.1+dfsg-2+deb12u1") == "1.10.1"
    assert upstream("1.12.9~rc1-1") == "1.12.9"
