# orchestrator: make venv | make test | make demo | make bench
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv orthanc test test-fast test-hosts images demo bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,fleet]'
	touch $@

# The README's test command: the whole suite, real Orthanc and systemd included.
test: venv
	$(PY) -m pytest -q -p no:cacheprovider

# Unit tests only (no Orthanc, no systemd): seconds.
test-fast: venv
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

# The tests that boot real Debian hosts (systemd-nspawn; root, mmdebstrap, systemd-container).
test-hosts: venv
	$(PY) -m pytest -q -p no:cacheprovider tests/hosts

# Build (or find cached) the Debian host images before a test run: about a minute each.
images: venv
	$(PY) -c 'from tests.harness.debian_host import *; [print(ensure_image(i, log=print)) for i in (BOOKWORM, TRIXIE, SYSVINIT)]'

# Debian's Orthanc package, installed when missing (needs root).
orthanc:
	@test -x /usr/sbin/Orthanc || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc; }

demo: venv orthanc
	$(PY) demo/demo.py

bench: venv
	$(PY) bench/startup.py
	$(PY) bench/replicate.py
	$(PY) bench/upgrade.py
	$(PY) bench/services.py
	$(PY) bench/package_jump.py
	$(PY) bench/database_upgrade.py
	$(PY) bench/blue_green.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
