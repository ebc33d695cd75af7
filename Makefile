# Two entry points: `make run` (gateway with etc/scarfgw.yaml) and `make test` (everything).
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= etc/scarfgw.yaml

.PHONY: run test venv bench

$(VENV)/.installed: setup.cfg pyproject.toml $(shell find scarfgw twisted -name '*.py')
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet ".[test]"
	$(PY) -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
	touch $@

venv: $(VENV)/.installed

run: venv
	mkdir -p var
	$(VENV)/bin/twistd --pidfile= -n scarfgw --config $(CONFIG)

test:
	bash scripts/test.sh

bench: venv
	$(PY) bench/run.py
