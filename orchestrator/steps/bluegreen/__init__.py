"""Blue/green: move to a second server by replication, with seconds of write freeze.

The steps, in plan order: `replicate` (bulk copy while the old server serves),
`catch-up` (passes until the copy keeps up, MD5s checked), `freeze` (no new
writes on the old server, final catch-up), `verify-copy` (sets, MD5s, counts,
deletions), `switch` (clients to the new server; undo carries back what arrived
there). See docs/blue-green.md.
"""

from orchestrator.steps.bluegreen.catch_up import CatchUp
from orchestrator.steps.bluegreen.copy import Replicate
from orchestrator.steps.bluegreen.freeze import Freeze
from orchestrator.steps.bluegreen.switch import Switch
from orchestrator.steps.bluegreen.verify_copy import VerifyCopy

__all__ = ["CatchUp", "Freeze", "Replicate", "Switch", "VerifyCopy"]
