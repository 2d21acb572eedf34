"""Fuzz the plan loader: whatever the text, it returns a Plan or raises InputError."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import InputError
from orchestrator.plan import Plan, parse_plan, step_kinds

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOKENS = list("-:{}[],&*!|>'\"#%@`?.~<=\\\n\t ") + [
    "version", "service", "steps", "name", "binary", "config", "credentials", "password",
    "timeout", "1", "0", "-1", "1.5", ".nan", ".inf", "null", "true", "yes", "2024-13-45",
    "&a ", "*a", "&b ", "*b", "!!int ", "!!float ", "!!binary ", "!!timestamp ", "!!set ",
    "!!python/object:os.system ", "<<: ", "---\n", "...\n", "\ufeff", "\x00", "\x85", "  ", "- ",
    *step_kinds(),
]

VALID = {
    "version": 1,
    "service": {"name": "orthanc", "binary": "/usr/sbin/Orthanc", "config": "/etc/orthanc/",
                "credentials": {"username": "u", "password_env": "P"}},
    "steps": ["preflight", {"stop-service": {"timeout": 120}}, "snapshot",
              {"relocate": {"to": "db-v7"}}, {"upgrade": {"timeout": 7200, "stall": 600}},
              "start-service", {"health-check": {"expect": {"database_version": 6}}},
              {"command": {"argv": ["true"], "undo": ["false"]}}],
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)


def check(text: str) -> None:
    try:
        result = parse_plan(text, "fuzz.yaml")
    except InputError as exc:
        assert exc.message and "\n" not in exc.message and exc.hint
    else:
        assert isinstance(result, Plan)


@FUZZ
@given(st.text(max_size=400))
def test_random_text(text):
    check(text)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=80).map("".join))
def test_yaml_shaped_text(text):
    check(text)


def paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, prefix + (i,))


ALL_PATHS = [p for p in paths(VALID) if p]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(ALL_PATHS), json_values | st.just(KeyError)), max_size=4))
def test_mutated_valid_plans(mutations):
    """Replace or delete parts of a valid plan, dump it as YAML, load it."""
    import copy

    plan = copy.deepcopy(VALID)
    for path, value in mutations:
        parent = plan
        try:
            for part in path[:-1]:
                parent = parent[part]
            if value is KeyError:
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    check(yaml.safe_dump(plan, allow_unicode=True))
