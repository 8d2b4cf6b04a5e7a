# mergeval: `make demo` runs the offline toy sweep, `make test` runs the tests.
# Each sets up .venv itself. torch is installed first from TORCH_SPEC so that a CPU machine
# never pulls a multi-GB CUDA build; GPU users pick theirs: make demo TORCH_SPEC="torch==2.9.1".

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.mergeval-installed
TEST_STAMP := $(VENV)/.mergeval-test-installed
# --no-compile: byte-compiling every installed package (torch, transformers, prefect, gradio…)
# is a large part of a fresh install on 2 cores; Python compiles what it imports, when it does.
PIP := $(BIN)/pip install --quiet --no-compile
# ...which only pays off if Python may write what it compiled: with PYTHONDONTWRITEBYTECODE set
# (some images set it), every process, each sweep's subprocess and each test's, compiled torch,
# transformers and prefect from source again (importing them: 6.7 s instead of 3.4 s).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: venv test-venv browser demo test bench clean

$(RUN_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) "$(TORCH_SPEC)"
	$(PIP) -e .
	touch $@

$(TEST_STAMP): $(RUN_STAMP)
	$(PIP) -e ".[test]"
	touch $@

venv: $(RUN_STAMP)
test-venv: $(TEST_STAMP)

# The shipped zoo (checked against zoo/MANIFEST.json, nothing to train) and the toy sweep file.
demo: venv
	$(BIN)/mergeval zoo
	$(BIN)/mergeval sweep sweeps/toy.yaml

# The browser tests drive Debian's chromium through playwright (it cannot download its own).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

test: test-venv browser
	$(BIN)/ruff check src flows tests bench
	# Three workers on two cores: a test waiting on a server or a subprocess leaves its core to
	# another (2026-12-07: three workers 9 min 26 s and 9 min 47 s; two 9 min 57 s to 11 min 11 s).
	# xdist's own order (groups with the most tests first) did better than the longest first.
	OMP_NUM_THREADS=1 $(BIN)/pytest -q -n 3 --dist loadgroup --durations=15  # the slowest tests, named in every CI log

bench: test-venv
	$(BIN)/python bench/sweep_bench.py

clean:
	rm -rf .mergeval reports/2* reports/.tmp-*
