# Set-up and entry points. Every target installs what it needs first, so a
# fresh Debian 12 machine (as root) needs nothing but `make demo` / `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
BUILT   := $(VENV)/.built
# The compiled modules' sources: each module of blizzard._compiled.MODULES (a .py,
# with a .pxd beside it where it is typed), and the list itself.
COMPILED := blizzard/_compiled.py $(shell find blizzard -name '*.pxd') \
	$(shell python3 -c "import runpy; print(' '.join(m.replace('.', '/') + '.py' for m in runpy.run_path('blizzard/_compiled.py')['MODULES']))")

.PHONY: demo test soak lint bench clean

# The interpreted build (the same sources, BLIZZARD_PURE=1) runs the tests
# marked `interpreted` again: the state machines and the crash tests.
PURE_RUN := BLIZZARD_PURE=1 $(PY) -m pytest -q -m "interpreted and not slow"

$(STAMP): pyproject.toml setup.py scripts/install-system-deps.sh
	bash scripts/install-system-deps.sh
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

# The DPDK transport's C (a cffi module, built where libdpdk is installed).
DPDK_DIR := blizzard/replication/transport/dpdk
DPDK_SRC := $(wildcard $(DPDK_DIR)/_bz*.c $(DPDK_DIR)/_bz*.h) $(DPDK_DIR)/_build.py
DPDK_SO  := $(wildcard $(DPDK_DIR)/_dpdk.*.so)

# Recompile after a change to a compiled module (else Blizzard warns and runs
# interpreted; `blizzard/_compiled.py` exits 0 when the build is current), or
# to the DPDK transport's C (its module is older than one of its sources).
$(BUILT): $(STAMP) $(wildcard $(COMPILED)) $(DPDK_SRC)
	$(PY) blizzard/_compiled.py \
		&& [ -z "$$(find $(DPDK_SRC) -newer $(DPDK_SO) 2>/dev/null)" ] \
		|| $(PY) -m pip install --quiet --no-deps -e .
	touch $(BUILT)

demo: $(BUILT)
	$(VENV)/bin/blizzard demo

test: $(BUILT)
	$(PY) -m pytest -q
	$(PURE_RUN)

soak: $(BUILT)
	$(PY) -m pytest -q --hypothesis-profile=soak -m "slow or not slow" --timeout 7200

lint: $(STAMP)
	$(VENV)/bin/ruff check blizzard tests examples
	$(VENV)/bin/mypy  # the files and settings are in pyproject.toml [tool.mypy]

bench: $(BUILT)
	$(VENV)/bin/blizzard bench pool

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
