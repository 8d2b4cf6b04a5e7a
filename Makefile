# mergeval: `make demo` runs the offline toy sweep, `make test` runs the tests.
# Each sets up .venv itself. torch is installed first from TORCH_SPEC so that a CPU machine
# never pulls a multi-GB CUDA build; GPU users pick theirs: make demo TORCH_SPEC="torch==2.9.1".

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.mergeval-installed

.PHONY: venv browser demo test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

venv: $(STAMP)

demo: venv
	$(BIN)/mergeval zoo
	$(BIN)/mergeval sweep

# The browser tests drive Debian's chromium through playwright (it cannot download its own).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

test: venv browser
	$(BIN)/ruff check src flows tests bench
	# two workers: most of a sweep test is waiting (servers starting, subprocesses, back-off)
	OMP_NUM_THREADS=1 $(BIN)/pytest -q -n 2 --dist loadgroup --durations=15  # the slowest tests, named in every CI log

bench: venv
	$(BIN)/python bench/sweep_bench.py

clean:
	rm -rf .mergeval reports/2* reports/.tmp-*
