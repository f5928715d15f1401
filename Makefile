# Edge Workbench: one target per thing a person does.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# onnx2tf 2.x lives in its own Python 3.12 environment (README: "Environments"); the TFLite
# format's onnx2tf route runs its program from there
O2T_VENV  := .venv-onnx2tf
O2T_STAMP := $(O2T_VENV)/.installed
# tflite-runtime 2.14 (the runtime on many boards) in its own small environment: it needs numpy 1.x,
# the main one has numpy 2. Export loads every .tflite in it to prove which runtimes load the file.
RT214_VENV  := .venv-tflite214
RT214_STAMP := $(RT214_VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 3

.PHONY: setup demo test test-slow bench app clean lock vulkan

setup: $(STAMP) $(O2T_STAMP) $(RT214_STAMP) vulkan

# Software Vulkan for LiteRT's GPU accelerator (installs as root with apt-get; else one line saying what to install)
vulkan:
	@bash scripts/install_vulkan.sh

$(RT214_STAMP): envs/tflite214.lock
	@test -x $(RT214_VENV)/bin/python || $(PYTHON) -m venv $(RT214_VENV)
	$(RT214_VENV)/bin/pip install --quiet -r envs/tflite214.lock
	@touch $(RT214_STAMP)

#: byte-code is written on first import instead (5 GB of packages, most never imported).
# The main environment: the package with its dev, ray and litert-torch extras, held to the
# committed lock (envs/main.lock) so a fresh machine gets the same set; what was installed is
# written to .venv/installed.lock and must pass pip check.
$(STAMP): pyproject.toml envs/main.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c envs/main.lock -e '.[dev,ray,litert]'
	$(BIN)/pip check
	@$(BIN)/pip freeze --exclude-editable | grep -v '^edge-workbench' > $(VENV)/installed.lock
	@diff -q envs/main.lock $(VENV)/installed.lock >/dev/null || echo "note: installed set differs from envs/main.lock (diff envs/main.lock $(VENV)/installed.lock)"
	@touch $(STAMP)

$(O2T_STAMP): envs/onnx2tf.lock scripts/python312.sh
	@test -x $(O2T_VENV)/bin/python || "$$(scripts/python312.sh)" -m venv $(O2T_VENV)
	$(O2T_VENV)/bin/pip install --quiet --upgrade pip
	$(O2T_VENV)/bin/pip install --quiet -r envs/onnx2tf.lock
	$(O2T_VENV)/bin/pip check
	@$(O2T_VENV)/bin/pip freeze > $(O2T_VENV)/installed.lock
	@touch $(O2T_STAMP)

# Re-resolve both environments from scratch (newest versions the pins allow) and rewrite the locks.
lock:
	rm -rf /tmp/ewb-lock && $(PYTHON) -m venv /tmp/ewb-lock/main && /tmp/ewb-lock/main/bin/pip install --quiet --upgrade pip
	/tmp/ewb-lock/main/bin/pip install --quiet -e '.[dev,ray,litert]' && /tmp/ewb-lock/main/bin/pip check
	/tmp/ewb-lock/main/bin/pip freeze --exclude-editable | grep -v '^edge-workbench' > envs/main.lock
	"$$(scripts/python312.sh)" -m venv /tmp/ewb-lock/o2t && /tmp/ewb-lock/o2t/bin/pip install --quiet --upgrade pip
	/tmp/ewb-lock/o2t/bin/pip install --quiet "onnx2tf==2.6.9" && /tmp/ewb-lock/o2t/bin/pip check
	/tmp/ewb-lock/o2t/bin/pip freeze > envs/onnx2tf.lock

demo: $(STAMP) $(O2T_STAMP) $(RT214_STAMP) vulkan
	$(BIN)/workbench demo

test: $(STAMP) $(O2T_STAMP) $(RT214_STAMP) vulkan
	$(BIN)/pytest

test-slow: $(STAMP) $(O2T_STAMP) $(RT214_STAMP) vulkan
	$(BIN)/pytest -m slow

bench: $(STAMP) $(O2T_STAMP) $(RT214_STAMP) vulkan
	$(BIN)/python scripts/bench.py
	$(BIN)/python scripts/bench_routes.py
	$(BIN)/python scripts/bench_gpu.py

app: $(STAMP) $(O2T_STAMP) $(RT214_STAMP) vulkan
	$(BIN)/workbench app

clean:
	rm -rf $(VENV) $(O2T_VENV) $(RT214_VENV) .pytest_cache build *.egg-info
