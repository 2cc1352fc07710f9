# netsim — everything a fresh Debian/Ubuntu machine needs, then the demo or the tests.
# Run as root: `sudo make demo`, `sudo make test`.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# command -> Debian package that provides it
SYSDEPS := ip:iproute2 iptables:iptables conntrack:conntrack tcpdump:tcpdump \
           busybox:busybox-static nsenter:util-linux ethtool:ethtool
SCENARIO ?= scenarios/napt-basic.yaml
PYTEST_ARGS ?=

.PHONY: all setup sysdeps venv demo test unit root lint clean-labs help

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
