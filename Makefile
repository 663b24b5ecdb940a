# sendit: `make demo` runs the quickstart study, `make test` the test suite. Both set up first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
SENDIT := $(VENV)/bin/sendit
SHARED ?= ../shared/data

.PHONY: setup data demo test test-slow test-browser bench clean

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

# One worker per core, each test file on one worker (module fixtures are built once).
test: setup
	$(PY) -m pytest -q -n auto --dist loadfile

test-slow: setup
	$(PY) -m pytest -q -m slow

# sendit (default and its other precision) vs the peer with and without --bf16, 3 rotated repetitions of full,
# LoRA, BitFit; results to benchmarks/results/train_vs_peer.md (~40 min on 2 idle AVX2 cores).
bench: setup
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/bench_vs_peer.py

# Each training speed-up alone (one switch changed per variant, full FT and LoRA, 2 reps, ~25 min idle);
# results to benchmarks/results/ablation.md
.PHONY: bench-ablation
bench-ablation: setup
	$(PY) benchmarks/bench_ablation.py

# The training loop's own cost (tiny model) vs the peer, threads, tokenisation (~5 min);
# results to benchmarks/results/loop.md
.PHONY: bench-loop
bench-loop: setup
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/bench_loop.py

# sendit serve under 1, 8 and 32 concurrent clients, 60 s each, batched vs naive (~7 min), and with EXPORT
# (e.g. `sendit export RUN -o runs/int8 --quantize int8`) the export served the same way (~3 min more);
# results to benchmarks/results/serve.md. RUN is a run directory, e.g. runs/quickstart/runs/<full run>
.PHONY: bench-serve
bench-serve: setup
	@test -n "$(RUN)" || { echo "usage: make bench-serve RUN=runs/quickstart/runs/<run> [EXPORT=<its export>]"; exit 2; }
	$(PY) benchmarks/bench_serve.py $(RUN) $(if $(EXPORT),--export $(EXPORT))

# sendit on a CUDA GPU (~8 min on a fresh machine with torch): method tests, quickstart on 2,000 tweets in
# bf16 and fp16 beside the CPU, predict, QLoRA, serve; results to benchmarks/results/gpu.md. Without CUDA: exit 1.
# PYTHON: the interpreter that has the machine's CUDA torch (default python3).
.PHONY: gpu-check
gpu-check:
	$${PYTHON:-python3} benchmarks/gpu_check.py

# The report in headless Chromium; installs the Debian packages chromium and chromium-driver if missing.
test-browser: setup
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); $$SUDO apt-get update -qq && \
		  $$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver; } || \
		echo "could not install chromium: the browser test will report itself skipped"
	$(PY) -m pytest -q -m browser tests/test_report_browser.py

clean:
	rm -rf runs
