"""Lazy listings of a source Orthanc's instances, a page at a time.

- `changes`: the /changes log (monotonic Seq): resumable exactly, incremental
  on a rerun. A deleted resource takes its change rows with it, so in a full
  pass the NewInstance changes count the instances that exist; fewer means the
  log was cleared, and the caller sweeps `/instances` too.
- `instances`: /instances?since&limit offsets: complete at the time of each
  page, but not ordered (pages shift under deletes), so it is the sweep.

Every ID is checked to be an Orthanc ID before it is put into a URL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from orchestrator.errors import OrthancHttpError
from orchestrator.replication.pool import Checkpoint, RetryPolicy, Work, with_retries
from orchestrator.replication.transport import Endpoint

ID_RE = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")
PAGE = 1000


def is_instance_id(value: object) -> bool:
    return isinstance(value, str) and bool(ID_RE.match(value))


def get_json(endpoint: Endpoint, path: str, policy: RetryPolicy) -> Any:
    """GET a JSON document with retries; raise OrthancHttpError unless 200 and JSON."""
    answer = with_retries(lambda: endpoint.get(path), policy)
    url = f"{endpoint.base_url}{path}"
    if answer.status != 200:
        raise OrthancHttpError(f"GET {url}: HTTP {answer.status}{detail(answer.data)}",
                               hint=status_hint(answer.status), status=answer.status)
    try:
        return json.loads(answer.data)
    except ValueError:
        raise OrthancHttpError(f"GET {url}: the answer is not JSON",
                               hint="is this URL an Orthanc server?") from None


def detail(body: bytes) -> str:
    """Orthanc's error message from a JSON error body, as ' (message)', or ''."""
    try:
        doc = json.loads(body)
    except ValueError:
        return ""
    if isinstance(doc, dict):
        text = str(doc.get("Details") or doc.get("Message") or "")[:200]
        return f" ({text})" if text else ""
    return ""


def status_hint(status: int) -> str | None:
    return {401: "wrong or missing credentials (--*-user with --*-password-env/-file, or ~/.netrc)",
            403: "this user may not do that",
            404: "no such resource: is this URL an Orthanc server?"}.get(status)


def last_seq(endpoint: Endpoint, policy: RetryPolicy) -> int:
    """The newest change's Seq (0 for an empty log)."""
    doc = get_json(endpoint, "/changes?last", policy)
    last = doc.get("Last") if isinstance(doc, dict) else None
    if not isinstance(last, int) or isinstance(last, bool) or last < 0:
        raise OrthancHttpError(f"GET {endpoint.base_url}/changes?last: no Last in the answer",
                               hint="is this URL an Orthanc server?")
    return last


def changes(endpoint: Endpoint, since: int, policy: RetryPolicy,
            page: int = PAGE) -> Iterator[Work | Checkpoint]:
    """Yield a Work per NewInstance change after `since`, a Checkpoint per other change."""
    while True:
        path = f"/changes?since={since}&limit={page}"
        doc = get_json(endpoint, path, policy)
        items = doc.get("Changes") if isinstance(doc, dict) else None
        last, done = (doc.get("Last"), doc.get("Done")) if isinstance(doc, dict) else (None, None)
        if not isinstance(items, list) or not isinstance(last, int) or not isinstance(done, bool):
            raise OrthancHttpError(f"GET {endpoint.base_url}{path}: not a changes document",
                                   hint="is this URL an Orthanc server?")
        for change in items:
            seq = change.get("Seq") if isinstance(change, dict) else None
            if not isinstance(seq, int) or seq <= since:
                raise OrthancHttpError(f"GET {endpoint.base_url}{path}: bad Seq {seq!r}",
                                       hint="is this URL an Orthanc server?")
            if change.get("ChangeType") == "NewInstance" and is_instance_id(change.get("ID")):
                yield Work(seq, change["ID"])
            else:
                yield Checkpoint(seq)
            since = seq
        if done or not items:
            return
        since = max(since, last)


def instances(endpoint: Endpoint, policy: RetryPolicy, start: int = 0,
              page: int = PAGE) -> Iterator[Work]:
    """Yield a Work per instance ID of /instances, keyed by its offset (+1)."""
    offset = start
    while True:
        path = f"/instances?since={offset}&limit={page}"
        ids = get_json(endpoint, path, policy)
        if not isinstance(ids, list):
            raise OrthancHttpError(f"GET {endpoint.base_url}{path}: not a list",
                                   hint="is this URL an Orthanc server?")
        for n, iid in enumerate(ids):
            if not is_instance_id(iid):
                raise OrthancHttpError(f"GET {endpoint.base_url}{path}: {str(iid)[:60]!r} is "
                                       "not an instance ID", hint="is this URL an Orthanc server?")
            yield Work(offset + n + 1, iid)
        if len(ids) < page:
            return
        offset += len(ids)
