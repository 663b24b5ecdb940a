# sendit: `make demo` runs the quickstart study, `make test` the test suite. Both set up first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
SENDIT := $(VENV)/bin/sendit
SHARED ?= ../shared/data

.PHONY: setup data demo test test-slow bench clean

setup: $(VENV)/.installed data

# torch first, by exact version: pip takes the local CPU wheel instead of a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

# Link the shared datasets into ./data (ignored by git); without them: `sendit data download`.
data:
	@if [ -e data ]; then :; \
	elif [ -d $(SHARED) ]; then ln -s $$(cd $(SHARED) && pwd) data && echo "linked $(SHARED) -> data"; \
	else echo "no $(SHARED): run '$(SENDIT) data download sentiment140' for the original archive"; fi

demo: setup
	$(SENDIT) study configs/quickstart.yaml

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

clean:
	rm -rf runs
