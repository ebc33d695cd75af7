# Two entry points: `make run` (gateway with etc/scarfgw.yaml) and `make test` (everything).
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= etc/scarfgw.yaml
COMPILED_STAMP := build/.compiled

.PHONY: run test venv bench pure

# The venv holds the dependencies and an editable (pure) install of this checkout; the modules
# listed in setup.py's COMPILED are then compiled with mypyc next to their sources, where
# twistd, the tests and the benchmarks import them. `make pure` removes them again;
# SCARFGW_PURE=1 (e.g. `SCARFGW_PURE=1 make test`) runs everything as plain Python.
$(VENV)/.installed: setup.py setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	SCARFGW_PURE=1 $(PY) -m pip install --quiet --config-settings editable_mode=compat -e ".[test]"
	$(PY) -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
	touch $@

# setup.py warns and builds nothing when it cannot compile (no gcc or Python headers).
$(COMPILED_STAMP): $(VENV)/.installed $(shell find scarfgw -name '*.py')
	$(PY) setup.py --quiet build_ext --inplace
	@if [ -n "$$(find scarfgw -name '*.so' -print -quit)" ]; then \
	  touch *__mypyc*.so $$(find scarfgw -name '*.so') && mkdir -p build && touch $@; \
	else \
	  $(MAKE) --no-print-directory pure; \
	fi

ifdef SCARFGW_PURE
venv: $(VENV)/.installed pure
else
venv: $(COMPILED_STAMP)
endif

pure:
	find scarfgw -name '*.so' -delete
	rm -f *__mypyc*.so $(COMPILED_STAMP)

run: venv
	$(VENV)/bin/twistd --pidfile= -n scarfgw --config $(CONFIG)

test:
	bash scripts/test.sh

bench: venv
	$(PY) bench/run.py
