"""The two servers of a blue/green move, as every step of it sees them.

The old server is the plan's `service` (its URL and credentials); the new one
is named once, by the `replicate` step's options (`to`, `credentials`), which
later steps read from the run's steps, so that the journal alone rebuilds the
pair after a crash. The resume state of the copies lives in the run's folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import InputError, OrthancHttpError, RefusedError
from orchestrator.host.clock import Clock
from orchestrator.orthanc.credentials import resolve
from orchestrator.replication.follow import Pair
from orchestrator.replication.listing import get_json
from orchestrator.replication.pool import RetryPolicy, Unreachable
from orchestrator.replication.transport import Endpoint
from orchestrator.steps.base import RunContext
from orchestrator.steps.kind import StepKind
from orchestrator.steps.record import Record

STATE_FOLDER = "blue-green"  # in the run's folder: resume states, checked MD5s


@dataclass(frozen=True, kw_only=True)
class Login(Record):
    """The new server's credentials: the password from an environment variable or a file."""

    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None


def wall() -> float:
    """Seconds since the epoch: freeze and switch happen in different processes after a
    crash, so their times must be comparable across them (a monotonic clock is not)."""
    return time.time()


def _endpoint(url: str, login: Login | None, workers: int, timeout: float) -> Endpoint:
    login = login or Login()
    clean, credentials = resolve(url, username=login.username, password_env=login.password_env,
                                 password_file=login.password_file)
    return Endpoint(clean, credentials, timeout=(min(10.0, timeout), timeout),
                    pool_size=workers + 2)


def copy_step(ctx: RunContext):  # -> Replicate (its module imports this one)
    """The run's replicate step: it names the new server."""
    for step in ctx.steps:
        if step.kind == StepKind.REPLICATE:
            return step
    raise InputError("a blue/green step needs a `replicate` step before it in the plan",
                     hint="add `- replicate: {to: http://new-server:8042}` first")


def source(ctx: RunContext, workers: int = 8, timeout: float = 120.0) -> Endpoint:
    svc = ctx.plan.service
    url = getattr(svc, "url", None) or ctx.config().local_url()
    creds = getattr(svc, "credentials", None)
    login = Login(username=creds.username, password_env=creds.password_env,
                  password_file=creds.password_file) if creds else None
    return _endpoint(url, login, workers, timeout)


def pair(ctx: RunContext) -> Pair:
    """Old -> new, with the copy's workers and retries."""
    opts = copy_step(ctx).options
    target = _endpoint(opts.to, opts.credentials, opts.workers, opts.timeout)
    return Pair(source(ctx, opts.workers, opts.timeout), target, state_dir(ctx),
                workers=opts.workers, policy=RetryPolicy(attempts=opts.retries + 1))


def target_at(ctx: RunContext, url: str) -> Endpoint:
    """The new server (its credentials) reached at `url`: after a `ports` switch, the old
    server's address."""
    opts = copy_step(ctx).options
    return _endpoint(url, opts.credentials, 1, opts.timeout)


def state_dir(ctx: RunContext) -> Path:
    return ctx.run_dir / STATE_FOLDER


def answers(endpoint: Endpoint) -> bool:
    """Whether the server answers /system now (one quick try)."""
    try:
        get_json(endpoint, "/system", RetryPolicy(attempts=1))
    except (OrthancHttpError, Unreachable):
        return False
    return True


def wait_answers(endpoint: Endpoint, clock: Clock, timeout: float) -> None:
    """Return once the server answers /system; raise RefusedError after `timeout` s."""
    deadline = clock.now() + timeout
    while not answers(endpoint):
        if clock.now() > deadline:
            raise RefusedError(f"{endpoint.base_url} did not answer within {timeout:g} s "
                               "after its restart", hint="see the old server's log")
        clock.sleep(0.1)
