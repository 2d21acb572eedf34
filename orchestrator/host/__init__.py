"""Ports for every side effect (commands, clock, ...) and their real adapters.

Steps and services receive these as parameters; nothing reaches the machine
except through them. The dry-run wrappers record changes instead of acting.
"""
