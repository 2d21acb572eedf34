"""The admin's load-balancer command in the tests: `front_ctl.py ROUTE freeze|thaw|route PORT [frozen]`."""

import json
import sys
from pathlib import Path

route = Path(sys.argv[1])
state = json.loads(route.read_text())
action = sys.argv[2]
if action == "freeze":
    state["frozen"] = True
elif action == "thaw":
    state["frozen"] = False
elif action == "route":
    state["port"] = int(sys.argv[3])
    state["frozen"] = len(sys.argv) > 4 and sys.argv[4] == "frozen"
else:
    sys.exit(f"unknown action {action}")
tmp = route.with_suffix(".tmp")
tmp.write_text(json.dumps(state))
tmp.replace(route)
