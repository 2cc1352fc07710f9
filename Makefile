# netsim — everything a fresh Debian/Ubuntu machine needs, then the demo or the tests.
# Run as root: `sudo make demo`, `sudo make test`.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# command -> Debian package that provides it
SYSDEPS := ip:iproute2 iptables:iptables conntrack:conntrack tcpdump:tcpdump \
           busybox:busybox-static nsenter:util-linux ethtool:ethtool
# The docker engine (`--engine docker` and its tests) needs a Docker engine: the distribution's
# docker.io is installed only when the machine has no dockerd at all (an existing docker-ce is
# left alone).  Its services are not started (policy-rc.d for the install): netsim runs its own
# dockerd inside each lab's namespace, never in the machine's.  A failed install is not fatal:
# the docker tests then say why they are skipped.
DOCKERD    ?= dockerd
DOCKER_PKG ?= docker.io
SCENARIO ?= scenarios/napt-basic.yaml
PYTEST_ARGS ?=

.PHONY: all setup sysdeps docker-engine venv demo test unit root lint clean-labs help

all: help

help:
	@echo "sudo make demo   set up, then run $(SCENARIO)"
	@echo "sudo make test   set up, then run every test (unit + root)"
	@echo "make unit        unit tests only (no root needed)"

sysdeps:
	@missing=""; for pair in $(SYSDEPS); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || [ -x /sbin/$$cmd ] || missing="$$missing $$pkg"; done; \
	$(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing system packages:$$missing — run as root (sudo make ...)"; exit 3; fi; \
	  echo "installing system packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	else echo "system packages: all present"; fi
	@$(MAKE) --no-print-directory docker-engine

docker-engine:
	@if command -v $(DOCKERD) >/dev/null 2>&1 || [ -x /usr/sbin/$(DOCKERD) ] || [ -x /usr/bin/$(DOCKERD) ]; then \
	  echo "docker engine: present ($$($(DOCKERD) --version 2>/dev/null | head -1))"; \
	elif [ "$$(id -u)" != 0 ]; then \
	  echo "docker engine: none (the docker engine tests will be skipped); run as root to install $(DOCKER_PKG)"; \
	else \
	  echo "installing $(DOCKER_PKG) (its services are not started)"; \
	  if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    trap 'rm -f /usr/sbin/policy-rc.d' EXIT; printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends $(DOCKER_PKG) >/dev/null; } \
	    || echo "docker engine: installing $(DOCKER_PKG) failed; the docker engine tests will be skipped"; \
	fi

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

setup: sysdeps venv

demo: setup
	$(BIN)/netsim run $(SCENARIO)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit: venv
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: venv
	$(BIN)/python -m mypy
	$(BIN)/ruff check netsim runtime tests

clean-labs: venv
	$(BIN)/netsim clean
