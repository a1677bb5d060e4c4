# Everything installs into a project venv (.venv). `make demo` and `make test` work on a fresh
# machine: they create the venv, install torch==2.13.0 (the local CPU wheel), the package with
# all its extras (building the native runtime), and Debian's graphviz when `dot` is missing.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip -q --disable-pip-version-check
STAMP  := $(VENV)/.fractalc-installed
NATIVE := $(wildcard backends/xnor/src/* backends/xnor/include/* backends/xnor/tools/*) CMakeLists.txt

.PHONY: setup demo test sanitize clean

$(STAMP): pyproject.toml $(NATIVE)
	@command -v dot >/dev/null 2>&1 || { echo "installing Debian's graphviz (dot)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null) \
	  || echo "warning: could not install graphviz; render tests that need dot will be skipped"; }
	@{ command -v aarch64-linux-gnu-g++ && command -v qemu-aarch64; } >/dev/null 2>&1 || { \
	  echo "installing Debian's g++-aarch64-linux-gnu and qemu-user (the AArch64 cross build and its tests)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++-aarch64-linux-gnu qemu-user >/dev/null) \
	  || echo "warning: could not install the AArch64 cross toolchain; tests/test_aarch64.py will fail (FRACTALC_TESTS_ALLOW_MISSING=1 skips it)"; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install "torch==2.13.0"
	$(PIP) install scikit-build-core nanobind
	$(PIP) install --no-build-isolation -e ".[all]"
# Bytecode for the editable tree, as a wheel install has it: without it every fractalc process
# compiles the modules from source (~40 ms of a `check`) where PYTHONDONTWRITEBYTECODE is set,
# as in some sandboxes (compileall writes .pyc files whatever that variable says).
	$(PY) -m compileall -q fractalc backends >/dev/null
	@touch $@

setup: $(STAMP)

demo: setup
	@mkdir -p build/demo
	$(VENV)/bin/fractalc compile specs/rf_c3d4.fr --target torch -o build/demo/rf_c3d4.py
	$(VENV)/bin/fractalc stats specs/rf_c3d4.fr

# The suite includes tests/test_runtime_sanitize.py, which runs the kernel tests against an
# AddressSanitizer + UndefinedBehaviorSanitizer build (backends/xnor/sanitize.sh).
test: setup
	$(PY) -m pytest -q -p no:cacheprovider

sanitize: setup
	bash backends/xnor/sanitize.sh $(PY)

clean:
	rm -rf build dist .pytest_cache
