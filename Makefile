# Set-up and entry points. Every target installs what it needs first, so a
# fresh Debian 12 machine (as root) needs nothing but `make demo` / `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed

.PHONY: demo test soak lint bench clean

$(STAMP): pyproject.toml scripts/install-system-deps.sh
	bash scripts/install-system-deps.sh
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/blizzard demo

test: $(STAMP)
	$(PY) -m pytest -q

soak: $(STAMP)
	$(PY) -m pytest -q --hypothesis-profile=soak -m "slow or not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check blizzard tests examples
	$(VENV)/bin/mypy  # the files and settings are in pyproject.toml [tool.mypy]

bench: $(STAMP)
	$(VENV)/bin/blizzard bench pool

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
