# Two commands do all set-up on a fresh machine:
#   make demo   creates .venv, installs, renders sample footage, runs the pipeline on it
#   make test   creates .venv, installs dev extras, runs the test suite
#   make test-fast   the inner loop: the tests not marked slow (no pipeline runs, no Ray)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.installed
FOOTAGE ?= sample_footage
OUT ?= runs/demo
CLIPS ?= 4
MINUTES ?= 1.5

.PHONY: demo test test-fast lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(PIP) install torch==2.13.0
	# [dev] = [cpu,hands,encoders,labels] + the test tools; constraints.txt: the stack measured here.
	$(PIP) install -c constraints.txt -e ".[dev]"
	# MediaPipe 0.10.14: the last release that bundles the hand and pose models and runs beside
	# numpy 2. Its declared jax and opencv-contrib are not needed (contrib would overwrite cv2);
	# what it does need (absl-py, attrs, flatbuffers, protobuf<5) is the [hands] extra.
	$(PIP) install --no-deps mediapipe==0.10.14
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/handclust sample-footage $(FOOTAGE) --clips $(CLIPS) --minutes $(MINUTES)
	$(VENV)/bin/handclust run $(FOOTAGE) --out $(OUT)
	@echo "open $(OUT)/report/index.html in a browser, or load $(OUT)/*.parquet with pandas / DuckDB"

# Two pytest workers (pytest-xdist): the suite is mostly single-threaded Python and waits on Ray, so
# two workers on 2 cores took 25.5 min where one took 51 (same load); each worker renders its own
# test footage and starts its own Ray instances. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --durations=15

test-fast: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check handclust tests jobs benchmarks

bench: $(STAMP)
	$(PY) benchmarks/throughput.py

clean:
	rm -rf $(OUT) $(FOOTAGE) benchmarks/work
