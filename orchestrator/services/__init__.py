"""Service managers: systemd, SysV, Windows SC and plain processes, one interface.

`base` holds the contract (State, ServiceStatus, ServiceTarget, ServiceManager),
`detect` picks and builds a manager, `proof` proves a stop. Parsers of tool
output are pure functions next to their manager (`systemd.parse_show`, `sc`).
"""
