# Hooks in JavaScript, Python and C, and the essay agent in Python, built from
# source with toolchains from Debian, PyPI and npm. Include from the top Makefile:
#
#   include plugins/polyglot.mk
#
#   make polyglot-tools     install what is missing (apt, a venv with componentize-py, npm ci)
#   make polyglot-plugins   build plugins/<name>/<name>.wasm for the four components
#   make polyglot-test      unit tests (Python and C logic, the built JS component) + each component's world
#   make polyglot-clean     remove the built components and generated C bindings
#
# Every path below is absolute, so the targets work from any directory.

# Included before the top Makefile's own rules, this file must not become the default goal.
POLYGLOT_SAVED_GOAL := $(.DEFAULT_GOAL)

POLYGLOT_ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))..)
POLYGLOT_PLUGINS := $(POLYGLOT_ROOT)/plugins

CARGO ?= cargo
PYTHON ?= python3
NODE ?= node
NPM ?= npm
CLANG ?= clang

# Pinned toolchain versions (JS versions are pinned in package.json + package-lock.json).
COMPONENTIZE_PY_VERSION := 0.25.1
POLYGLOT_APT_PACKAGES := clang lld wasi-libc libclang-rt-14-dev-wasm32

# Tool state lives under target/ (gitignored) so a fresh clone starts clean.
POLYGLOT_OUT ?= $(POLYGLOT_ROOT)/target/polyglot
POLYGLOT_VENV ?= $(POLYGLOT_OUT)/venv
COMPONENTIZE_PY := $(POLYGLOT_VENV)/bin/componentize-py
WIT_TOOL ?= $(or $(CARGO_TARGET_DIR),$(POLYGLOT_ROOT)/target)/debug/wit-tool
POLYGLOT_SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

WIT_FILES := $(wildcard $(POLYGLOT_ROOT)/wit/*.wit)

TOKEN_CAP_JS := $(POLYGLOT_PLUGINS)/hook-token-cap-js
SPEND_RATE_PY := $(POLYGLOT_PLUGINS)/hook-spend-rate-py
OP_CAP_C := $(POLYGLOT_PLUGINS)/hook-op-cap-c
ESSAY_PY := $(POLYGLOT_PLUGINS)/essay-agent-py

POLYGLOT_WASM := \
	$(TOKEN_CAP_JS)/hook-token-cap-js.wasm \
	$(SPEND_RATE_PY)/hook-spend-rate-py.wasm \
	$(OP_CAP_C)/hook-op-cap-c.wasm \
	$(ESSAY_PY)/essay-agent-py.wasm

.PHONY: polyglot-tools polyglot-apt polyglot-plugins polyglot-test polyglot-clean polyglot-force

polyglot-tools: polyglot-apt $(POLYGLOT_VENV)/.componentize-py-$(COMPONENTIZE_PY_VERSION) \
	$(TOKEN_CAP_JS)/node_modules/.package-lock.json

polyglot-plugins: $(POLYGLOT_WASM)

# Installs only the Debian packages that are missing; `apt-get update` only if any are.
polyglot-apt:
	@missing=""; \
	for p in $(POLYGLOT_APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "polyglot: installing$$missing"; \
	  $(POLYGLOT_SUDO) apt-get update && \
	  DEBIAN_FRONTEND=noninteractive $(POLYGLOT_SUDO) apt-get install -y --no-install-recommends $$missing; \
	fi

# The stamp names the pinned version, so changing the pin reinstalls.
$(POLYGLOT_VENV)/.componentize-py-$(COMPONENTIZE_PY_VERSION):
	rm -f $(POLYGLOT_VENV)/.componentize-py-*
	# A venv cut short (no pip) is rebuilt rather than trusted.
	[ -x $(POLYGLOT_VENV)/bin/pip ] || { rm -rf $(POLYGLOT_VENV) && $(PYTHON) -m venv $(POLYGLOT_VENV); }
	$(POLYGLOT_VENV)/bin/python -m pip install --disable-pip-version-check -q \
	  componentize-py==$(COMPONENTIZE_PY_VERSION)
	$(COMPONENTIZE_PY) --version
	touch $@

$(TOKEN_CAP_JS)/node_modules/.package-lock.json: $(TOKEN_CAP_JS)/package.json $(TOKEN_CAP_JS)/package-lock.json
	cd $(TOKEN_CAP_JS) && $(NPM) ci --no-audit --no-fund
	touch $@

# Cargo decides whether wit-tool is up to date (it relinks, and so touches, only on change).
$(WIT_TOOL): polyglot-force
	cd $(POLYGLOT_ROOT) && $(CARGO) build -p wit-tool
polyglot-force:

$(TOKEN_CAP_JS)/hook-token-cap-js.wasm: $(TOKEN_CAP_JS)/src/hook.js $(TOKEN_CAP_JS)/build.mjs $(WIT_FILES) \
		$(TOKEN_CAP_JS)/node_modules/.package-lock.json
	cd $(TOKEN_CAP_JS) && $(NODE) build.mjs $@

$(SPEND_RATE_PY)/hook-spend-rate-py.wasm: $(SPEND_RATE_PY)/app.py $(SPEND_RATE_PY)/spend_rate.py $(WIT_FILES) \
		$(POLYGLOT_VENV)/.componentize-py-$(COMPONENTIZE_PY_VERSION)
	cd $(SPEND_RATE_PY) && $(COMPONENTIZE_PY) -d $(POLYGLOT_ROOT)/wit -w hook componentize app -o $@

$(ESSAY_PY)/essay-agent-py.wasm: $(ESSAY_PY)/app.py $(ESSAY_PY)/essay.py $(WIT_FILES) \
		$(POLYGLOT_VENV)/.componentize-py-$(COMPONENTIZE_PY_VERSION)
	cd $(ESSAY_PY) && $(COMPONENTIZE_PY) -d $(POLYGLOT_ROOT)/wit -w agent componentize app -o $@

# C: bindings from the WIT -> core module for wasm32-wasi (reactor: no _start, exports
# are called repeatedly) -> component with the preview1 reactor adapter.
OP_CAP_C_GEN := $(POLYGLOT_OUT)/hook-op-cap-c
OP_CAP_C_CFLAGS := --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Werror \
	-Wno-unused-parameter -I$(OP_CAP_C_GEN)

$(OP_CAP_C)/hook-op-cap-c.wasm: $(wildcard $(OP_CAP_C)/src/*.c $(OP_CAP_C)/src/*.h) $(WIT_FILES) \
		$(WIT_TOOL) | polyglot-apt
	rm -rf $(OP_CAP_C_GEN) && mkdir -p $(OP_CAP_C_GEN)
	$(WIT_TOOL) c-bindings --wit $(POLYGLOT_ROOT)/wit --world hook --out $(OP_CAP_C_GEN)
	$(CLANG) $(OP_CAP_C_CFLAGS) -o $(OP_CAP_C_GEN)/core.wasm \
	  $(OP_CAP_C)/src/*.c $(OP_CAP_C_GEN)/hook.c $(OP_CAP_C_GEN)/hook_component_type.o
	$(WIT_TOOL) componentize --wit $(POLYGLOT_ROOT)/wit --world hook --adapter reactor \
	  $(OP_CAP_C_GEN)/core.wasm -o $@

polyglot-test: $(POLYGLOT_WASM) $(WIT_TOOL)
	cd $(SPEND_RATE_PY) && $(PYTHON) -m unittest -q
	cd $(ESSAY_PY) && $(PYTHON) -m unittest -q
	cd $(TOKEN_CAP_JS) && $(NPM) test --silent
	cd $(OP_CAP_C) && $(CLANG) -O1 -Wall -Wextra -Werror -o $(OP_CAP_C_GEN)/caps-test \
	  tests/caps_test.c src/caps.c -lm && $(OP_CAP_C_GEN)/caps-test
	@for w in $(filter %hook-token-cap-js.wasm %hook-spend-rate-py.wasm %hook-op-cap-c.wasm,$(POLYGLOT_WASM)); do \
	  $(WIT_TOOL) world $$w | grep -qx 'export interface budget-host:plugin/policy@0.1.0' \
	    || { echo "polyglot: $$w does not export the policy interface"; exit 1; }; \
	done
	@$(WIT_TOOL) world $(ESSAY_PY)/essay-agent-py.wasm | grep -qx 'export interface budget-host:plugin/run@0.1.0' \
	  || { echo "polyglot: essay-agent-py.wasm does not export the run interface"; exit 1; }
	@echo "polyglot: 4 components export their worlds"

polyglot-clean:
	rm -f $(POLYGLOT_WASM)
	rm -rf $(OP_CAP_C_GEN)

.DEFAULT_GOAL := $(POLYGLOT_SAVED_GOAL)
