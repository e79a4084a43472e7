# Two commands set everything up: `make demo` and `make test`.
# Each builds .venv from pinned versions when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BACKENDS := torch jax tensorflow
# Two pytest workers: the machine's two cores. Each test file runs in one
# worker, so a file's fixtures are built once. The files go to the workers
# in collection order, which tests/conftest.py starts with the longest ones
# (its LONGEST_FIRST), rather than in xdist's order by number of tests.
WORKERS ?= -n 2 --dist loadfile --no-loadscope-reorder
PYTEST_ARGS ?=

.PHONY: demo test lint format docs test-tensorflow test-jax test-torch test-notebooks bench clean

$(VENV)/.installed: requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

demo: $(VENV)/.installed
	$(PY) -m keras_mrl demo --out demo_out

# ruff: lint and formatting, configured in pyproject.toml.
lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(VENV)/.installed
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# The documentation site (mkdocs.yml) in site/: the guides, the notebooks as
# saved (not run) and the API reference from the docstrings. --strict makes
# every warning, such as a broken link or docstring reference, an error.
# NO_MKDOCS_2_WARNING silences the theme's notice about its own future.
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

# The linter and the docs build first; then the suite under each backend,
# where a test marked `once` runs in the first stage whose backend it takes
# (torch first: its eager loop compiles nothing). The notebooks run in the
# JAX stage, under which they run fastest, beside its tests: in a stage of
# their own, one worker idled while the other ran the longest notebook.
# Every stage prints its time, and a stage that fails stops the run.
#
# XLA compiles most of the suite's time away, and many tests compile the
# same small programs: JAX and TensorFlow share one compilation cache
# across the workers and stages of a run. Each run starts it empty, so a
# run never reuses what an earlier checkout compiled. The tests' programs
# are small and run a few steps, so LLVM's optimisation passes would cost
# more than they save: they are turned off, which halves compile times, and
# XLA's CPU backend emits its fusions with its older emitters, which compile
# a small program in about 60% of the time of the MLIR ones.
# The notebooks train for many steps, so their kernels keep the optimised
# code (tests/conftest.py).
# Two workers share the two cores, and OpenBLAS', torch's and faiss'
# threads spin while they wait for work: one OpenMP thread per worker.
XLA_CACHE := $(CURDIR)/.xla_cache
test: export OMP_NUM_THREADS = 1
test: export XLA_FLAGS = --xla_backend_optimization_level=0 \
  --xla_llvm_disable_expensive_passes=true --xla_cpu_use_fusion_emitters=false
test: export JAX_COMPILATION_CACHE_DIR = $(XLA_CACHE)/jax
test: export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS = 0
test: export TF_XLA_FLAGS = --tf_xla_persistent_cache_directory=$(XLA_CACHE)/tf
test: $(VENV)/.installed
	@rm -rf $(XLA_CACHE) && mkdir -p $(XLA_CACHE)/jax $(XLA_CACHE)/tf
	@start=$$(date +%s); $(MAKE) --no-print-directory lint; status=$$?; \
	echo "=== lint took $$(( $$(date +%s) - start )) s ==="; exit $$status
	@start=$$(date +%s); $(MAKE) --no-print-directory docs; status=$$?; \
	echo "=== docs took $$(( $$(date +%s) - start )) s ==="; exit $$status
	@set -e; ran=""; for b in $(BACKENDS); do \
	  paths=tests; \
	  if [ $$b = jax ]; then paths="tests notebooks --nbmake"; fi; \
	  start=$$(date +%s); echo "=== KERAS_BACKEND=$$b: $$paths ==="; \
	  KERAS_BACKEND=$$b KERAS_MRL_ONCE_RAN="$$ran" \
	    $(PY) -m pytest $$paths $(WORKERS) $(PYTEST_ARGS); \
	  echo "=== KERAS_BACKEND=$$b took $$(( $$(date +%s) - start )) s ==="; \
	  ran="$$ran $$b"; \
	done

test-%: $(VENV)/.installed
	KERAS_BACKEND=$* $(PY) -m pytest tests $(PYTEST_ARGS)

test-notebooks: $(VENV)/.installed
	@if ls notebooks/*.ipynb >/dev/null 2>&1; then \
	  KERAS_BACKEND=jax $(PY) -m pytest --nbmake $(WORKERS) notebooks; \
	else echo "no notebooks yet"; fi

clean:
	rm -rf $(VENV) demo_out build site *.egg-info $(XLA_CACHE)
