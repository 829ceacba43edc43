# Two entry points, both self-installing into .venv:
#   make demo   install everything, train the example model if missing, run the pipeline on digits (a quick audit)
#   make test   install everything and run the test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHECKPOINT := examples/checkpoints/resnet_digits.pt
DEMO_OUT ?= demo-out
# The demo audits quickly (32 samples, 4 decoder epochs, 16 search steps) and says so; the full audit is the same
# command without these options (64 samples, 12 epochs, 40 steps: 1-3 minutes here).
DEMO_AUDIT ?= --samples 32 --decoder-epochs 4 --search-steps 16
# A real Triton server for the deployment tests, apart from .venv: nvidia-pytriton needs NumPy < 2, and its
# Python-backend stub links the system libpython3.11, so the venv is built from that interpreter.
TRITON_PYTHON ?= /usr/bin/python3.11
TRITON_VENV ?= .triton-venv
TRITON_STAMP := $(TRITON_VENV)/.installed
# torchvision's PyPI build does not import next to the CPU torch 2.13.0, so the torchvision models are tested in
# their own venv, with torch 2.14.1 (a 5.5 GB CUDA build that runs on CPU) and torchvision 0.29.1 from this disk.
TV_VENV ?= .tv-venv
TV_STAMP := $(TV_VENV)/.installed

.PHONY: install triton-env demo test test-torchvision clean

install: $(STAMP)

$(TRITON_STAMP):
	rm -rf $(TRITON_VENV)
	$(TRITON_PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/pip install --disable-pip-version-check -q 'nvidia-pytriton==0.7.0' 'numpy<2' 'onnxruntime>=1.20' 'torch==2.13.0'
	touch $(TRITON_STAMP)

# Not fatal: without it the Triton tests skip and say why.
triton-env:
	@$(MAKE) --no-print-directory $(TRITON_STAMP) || echo "warning: could not create $(TRITON_VENV); the Triton tests will skip"

# pyproject.toml admits torch up to 2.14.x; here we pin the CPU 2.13.0 wheel on this machine's disk
# (2.14.1 on this disk is a 5.5 GB CUDA build).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# The pip bundled with Python 3.11 (23.x) backtracks into old releases pinning a CUDA torch; a current one does not.
	$(BIN)/pip install --disable-pip-version-check -q --upgrade 'pip>=25'
	$(BIN)/pip install --disable-pip-version-check -q -e '.[test]' 'torch==2.13.0'
	touch $(STAMP)

# The demo's checkpoint ships in the repository (735 KB, trained by this very command, seed 0): it is trained only
# when missing (`rm` it to retrain; tests/end_to_end/test_examples.py checks that it still fits and has learned).
$(CHECKPOINT): | $(STAMP)
	$(BIN)/python examples/train.py --model resnet --data digits --out $(CHECKPOINT)

demo: $(CHECKPOINT)
	mkdir -p $(DEMO_OUT)
	$(BIN)/datamix profile examples/models.py:resnet --weights $(CHECKPOINT) \
		--input-shape 1,1,32,32 --budget 0.2 --k 4 --plot $(DEMO_OUT)/flops.png
	$(BIN)/datamix split examples/models.py:resnet --weights $(CHECKPOINT) --data digits \
		--input-shape 1,1,32,32 --budget 0.2 --k 4 --out $(DEMO_OUT)/resnet-split --force
	$(BIN)/datamix serve-local $(DEMO_OUT)/resnet-split --runtime onnx --samples 200
	$(BIN)/datamix serve-local $(DEMO_OUT)/resnet-split --runtime tflite --samples 200
	@echo "quick audit for the demo ($(DEMO_AUDIT)); the full audit: $(BIN)/datamix audit $(DEMO_OUT)/resnet-split"
	$(BIN)/datamix audit $(DEMO_OUT)/resnet-split $(DEMO_AUDIT) --report $(DEMO_OUT)/audit.png

test: $(STAMP) triton-env
	$(BIN)/python -m pytest

$(TV_STAMP): pyproject.toml
	$(PYTHON) -m venv $(TV_VENV)
	$(TV_VENV)/bin/pip install --disable-pip-version-check -q --upgrade 'pip>=25'
	$(TV_VENV)/bin/pip install --disable-pip-version-check -q -e '.[test]' 'torch==2.14.1' 'torchvision==0.29.1'
	touch $(TV_STAMP)

# Not part of `make test`: the torchvision zoo (FLOPs against published figures, a real split end to end).
test-torchvision: $(TV_STAMP)
	$(TV_VENV)/bin/python -m pytest -m torchvision

clean:
	rm -rf $(VENV) $(TRITON_VENV) $(TV_VENV) $(DEMO_OUT)  # the shipped checkpoint stays
