# The README's two commands: `make demo` and `make test`. Each sets up everything from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
EXTRAS ?= dev,face,whisper,app

.PHONY: install demo test test-fast lint format clean

install: $(STAMP)

# torch is pinned to the CPU wheel through constraints.txt; on a GPU machine install your CUDA torch
# into the venv first and run `make install CONSTRAINTS=`.
CONSTRAINTS ?= -c constraints.txt
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	@! $(BIN)/python -m pip list 2>/dev/null | grep -Ei '^(torchvision|torchaudio) ' || \
		{ echo "torchvision/torchaudio must not be installed (they break diffusers here)"; exit 1; }
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/difftalk demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy

# every test, slow ones included (what CI runs)
test: lint
	$(BIN)/python -m pytest

# quick iteration: skips the tests marked slow (browser, end-to-end CLI, training runs); no lint
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks scripts
	$(BIN)/ruff check --fix src tests benchmarks scripts

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache outputs
