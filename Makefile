# Two commands a newcomer needs: `make demo` and `make test`.
# Both install what a fresh machine lacks (wasm target, toolchains, model).

CARGO ?= cargo
WASM_TARGET := wasm32-wasip2
HOST := target/debug/host
RUST_AGENTS := essay-agent chaos-agent
# Hooks build in their own cargo run: guest-sdk's `hook` feature must not unify with `agent`.
RUST_HOOKS := budget-monitor chaos-hook

# Hooks in JavaScript, Python and C and the Python essay agent: polyglot-tools,
# polyglot-plugins, polyglot-test (toolchains from Debian, PyPI and npm).
include plugins/polyglot.mk

.PHONY: all setup build plugins demo test bench clean

all: build plugins

setup:
	@rustup target list --installed 2>/dev/null | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

build:
	$(CARGO) build -p host

# Rust plugins: one cargo invocation for all, then copy each to plugins/<name>/<name>.wasm.
# The JS, Python and C components come from plugins/polyglot.mk.
plugins: setup polyglot-tools polyglot-plugins
	$(CARGO) build --release --target $(WASM_TARGET) $(addprefix -p ,$(RUST_AGENTS))
	$(CARGO) build --release --target $(WASM_TARGET) $(addprefix -p ,$(RUST_HOOKS))
	@for p in $(RUST_AGENTS) $(RUST_HOOKS); do \
	  cp target/$(WASM_TARGET)/release/$$(echo $$p | tr - _).wasm plugins/$$p/$$p.wasm; \
	  echo "built plugins/$$p/$$p.wasm"; \
	done

demo: setup build plugins
	$(HOST) run plugins/essay-agent/essay-agent.wasm --budget 1.0 \
	  --provider scripted --script tests/fixtures/essay-mini.json

test: setup plugins polyglot-test
	$(CARGO) test -p host

clean:
	$(CARGO) clean
	rm -f plugins/*/*.wasm
