"""The plan: YAML text -> a validated, typed `Plan`. The only package importing yaml/jsonschema.

One noun per module:
- `model`: the typed plan (`Plan`, `ServiceSpec`, `StepSpec`, ...);
- `loader`: the pipeline, `load_plan(path)` and `parse_plan(text)`;
- `document`: the YAML document, read defensively, with the line of every key;
- `schema`: the shipped JSON Schema, its step kinds, its errors in plain words;
- `rules`: what the schema cannot say (step order, credentials, the Orthanc config);
- `normalize`: defaults filled in, paths resolved against the plan's folder;
- `problems`: `Problem` and `PlanError`, the one-line `file:line: key.path: problem`.

yaml and jsonschema are imported inside the functions that need them, so that
`orchestrator --help` and `orchestrator schema` do not pay for them.
"""

from __future__ import annotations

from orchestrator.plan.document import MAX_DEPTH, MAX_NODES
from orchestrator.plan.loader import MAX_PLAN_BYTES, load_plan, parse_plan
from orchestrator.plan.model import CredentialsSpec, Manager, Plan, ServiceSpec, StepSpec
from orchestrator.plan.problems import KeyPath, PlanError, Problem, format_path
from orchestrator.plan.rules import check_against_config
from orchestrator.plan.schema import plan_schema, step_kinds

__all__ = ["MAX_DEPTH", "MAX_NODES", "MAX_PLAN_BYTES", "CredentialsSpec", "KeyPath", "Manager",
           "Plan", "PlanError", "Problem", "ServiceSpec", "StepSpec", "check_against_config",
           "format_path", "load_plan", "parse_plan", "plan_schema", "step_kinds"]
