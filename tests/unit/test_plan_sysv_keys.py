"""The plan's SysV keys reach the SysV manager: init_script and allow_unscoped_stop."""

from pathlib import Path
from types import SimpleNamespace

from orchestrator.host.clock import FakeClock
from orchestrator.host.runner import FakeRunner
from orchestrator.plan import parse_plan
from orchestrator.wiring import plan_manager

PLAN = """\
version: 1
service:
  name: orthanc-b
  manager: sysv
  binary: /usr/sbin/Orthanc
  config: /etc/orthanc-b/
  init_script: /etc/init.d/orthanc-b-scoped
  allow_unscoped_stop: true
steps:
  - preflight
"""


def test_sysv_keys_are_parsed_and_wired():
    plan = parse_plan(PLAN, "p.yaml", base_dir=Path("/plans"))
    assert plan.service.init_script == Path("/etc/init.d/orthanc-b-scoped")
    assert plan.service.allow_unscoped_stop is True
    config = SimpleNamespace(index_dir="/var/lib/orthanc-b", index_backend="sqlite")
    manager, note = plan_manager(plan, config, FakeRunner({}), FakeClock(), None)
    assert manager.kind == "sysv" and "as the plan says" in note
    assert manager.stop_commands() == [["/etc/init.d/orthanc-b-scoped", "stop"]]
    assert manager.allow_unscoped_stop is True


def test_sysv_keys_default_to_the_stock_script_and_refusal():
    plan = parse_plan(PLAN.replace("  init_script: /etc/init.d/orthanc-b-scoped\n", "")
                      .replace("  allow_unscoped_stop: true\n", ""), "p.yaml", base_dir=Path("/plans"))
    assert plan.service.init_script is None and plan.service.allow_unscoped_stop is False
    config = SimpleNamespace(index_dir="/var/lib/orthanc-b", index_backend="sqlite")
    manager, _ = plan_manager(plan, config, FakeRunner({}), FakeClock(), None)
    assert manager.stop_commands() == [["/etc/init.d/orthanc-b", "stop"]]
    assert manager.allow_unscoped_stop is False
