"""llm-local beside llama.cpp (llama-cpp-python), on the same GGUF, in one run.

Run by `make bench-llamacpp` (which builds llama-cpp-python into a venv under target/):
    python bench_llamacpp.py MODEL.gguf SIDE_BINARY FIXTURES_DIR

1. Speed on a fresh prompt (request-length.json's, 36 tokens), greedy, 256 tokens:
   decode tok/s = (tokens - 1) / (time of an (N+1)-token call - time of a 1-token call),
   the same definition on both sides, alternated ROUNDS times; medians printed.
   llama.cpp runs with its default KV cache (f16), at 2 threads (the issue's reference)
   and at llama-cpp-python's default (cpu_count // 2); ours with its defaults (threads
   from the free cores, no prefix cache: every prompt is fresh).
2. Agreement: on each recorded fixture prompt, llama.cpp generates greedily (up to 128
   tokens, to its end of turn); ours is fed llama.cpp's tokens (teacher forcing) and its
   top-1 before each is compared. Also: how many leading tokens of greedy text agree.
"""

import json
import os
import statistics
import subprocess
import sys
import time

from llama_cpp import Llama

ROUNDS = int(os.environ.get("ROUNDS", "5"))  # 0: agreement only
N = int(os.environ.get("TOKENS", "256"))
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def chatml(messages):
    """The GGUF's template (ChatML, default system prompt when none is given)."""
    out = ""
    if messages[0]["role"] != "system":
        out += f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
    for m in messages:
        out += f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
    return out + "<|im_start|>assistant\n"


def tokens(llm, messages):
    return llm.tokenize(chatml(messages).encode(), add_bos=False, special=True)


def timed_generate(llm, prompt, count):
    """Seconds to prefill a fresh prompt and sample `count` greedy tokens."""
    llm.reset()
    t = time.perf_counter()
    made = 0
    for _ in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
        made += 1
        if made == count:
            break
    return time.perf_counter() - t, made


def llama_decode(llm, prompt, n):
    timed_generate(llm, prompt, 4)  # warm-up
    one, _ = timed_generate(llm, prompt, 1)
    full, made = timed_generate(llm, prompt, n + 1)
    return (made - 1) / (full - one), one


def ours_decode(side, prompt, n):
    ids = ",".join(map(str, prompt))
    out = subprocess.run([side, "speed", str(n), ids], check=True, capture_output=True, text=True)
    load_ms, prefill_ms, tok_s, made, threads = out.stdout.split()
    return float(tok_s), float(prefill_ms) / 1e3, float(load_ms), int(made), int(threads)


def greedy_tokens(llm, prompt, limit):
    llm.reset()
    out = []
    for tok in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
        out.append(tok)
        if tok == llm.token_eos() or len(out) == limit:
            break
    return out


def main():
    model, side, fixtures = sys.argv[1:4]
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, cores: {os.cpu_count()}, "
          f"load average: {os.getloadavg()[0]:.1f}, rounds: {ROUNDS}, tokens: {N}")
    t = time.perf_counter()
    two = Llama(model_path=model, n_ctx=2048, n_threads=2, n_threads_batch=2, verbose=False)
    print(f"llama.cpp load: {(time.perf_counter() - t) * 1e3:.0f} ms")
    default = Llama(model_path=model, n_ctx=2048, verbose=False)
    print(f"llama.cpp default threads: {default.n_threads}")
    with open(os.path.join(fixtures, "request-length.json")) as f:
        prompt = tokens(two, json.load(f)["messages"])
    print(f"prompt: {len(prompt)} tokens (llama.cpp's tokenizer)")

    if ROUNDS == 0:
        agreement(two, side, fixtures)
        return
    rows = {"llm-local": [], "llama.cpp 2 threads": [], "llama.cpp default threads": []}
    prefill = {k: [] for k in rows}
    loads, threads = [], []
    for r in range(ROUNDS):
        tok_s, pre, load_ms, made, th = ours_decode(side, prompt, N)
        rows["llm-local"].append(tok_s)
        prefill["llm-local"].append(pre)
        loads.append(load_ms)
        threads.append(th)
        for name, llm in (("llama.cpp 2 threads", two), ("llama.cpp default threads", default)):
            tok_s, pre = llama_decode(llm, prompt, made - 1)
            rows[name].append(tok_s)
            prefill[name].append(pre)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rows.items())
              + f" tok/s (ours: {made} tokens, {th} thread(s) free at the end)")
    ref = statistics.median(rows["llama.cpp 2 threads"])
    for k, v in rows.items():
        med = statistics.median(v)
        print(f"decode {k}: median {med:.1f} tok/s (min {min(v):.1f}, max {max(v):.1f}), "
              f"{med / ref:.2f}x llama.cpp 2 threads; 36-token prompt + 1 token: "
              f"{statistics.median(prefill[k]) * 1e3:.0f} ms")
    print(f"llm-local load: median {statistics.median(loads):.0f} ms; threads used: {threads}")
    agreement(two, side, fixtures)


def agreement(two, side, fixtures):
    agree = total = 0
    for name in ("request-basic.json", "request-length.json", "request-stream.json"):
        with open(os.path.join(fixtures, name)) as f:
            p = tokens(two, json.load(f)["messages"])
        gen = greedy_tokens(two, p, 128)
        ids = ",".join(map(str, p + gen))
        out = subprocess.run([side, "top1", str(len(p)), ids], check=True, capture_output=True, text=True)
        ours = [int(x) for x in out.stdout.strip().split(",")]
        same = sum(a == b for a, b in zip(ours, gen))
        lead = next((i for i, (a, b) in enumerate(zip(ours, gen)) if a != b), len(gen))
        agree += same
        total += len(gen)
        print(f"agreement {name}: {same}/{len(gen)} top-1 equal when fed llama.cpp's tokens; "
              f"greedy text identical for the first {lead} tokens")
    print(f"agreement overall: {agree}/{total} = {100 * agree / total:.1f}%")


if __name__ == "__main__":
    main()
