"""HF generate against vLLM on the same prompts, batch sizes and token budget, in one run.

    .venv/bin/python bench/sampling.py                      # SmolLM2-135M, 80 MT-Bench prompts
    .venv/bin/python bench/sampling.py --model tiny-llama --batch-sizes 1 8 --max-new-tokens 16

Both backends go through alignflow's own samplers (``make_sampler``), greedy,
so they generate nearly the same tokens; throughput is completion tokens per
second of wall time, startup is model load (HF) or server start to healthy
(vLLM). For vLLM "batch size" is the number of requests in flight, which is
what its scheduler batches. Prints a Markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline_lib.data import load_rows  # noqa: E402
from pipeline_lib.models import load_tokenizer, resolve_model  # noqa: E402
from pipeline_lib.sampling import SamplingParams, make_sampler, render_chat  # noqa: E402
from pipeline_lib.sampling.config import SamplerConfig  # noqa: E402

MT_BENCH = ROOT.parent / "shared" / "data" / "mt-bench-questions.jsonl"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--prompts", type=int, default=80, help="MT-Bench first turns to use (at most 80)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64, 128])
    parser.add_argument("--backends", nargs="+", default=["hf", "vllm"], choices=["hf", "vllm"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sampling.json")
    args = parser.parse_args()

    model = resolve_model(args.model)
    rows = load_rows(MT_BENCH, "prompt", limit=args.prompts).rows
    tokenizer = load_tokenizer(model)
    prompts = [render_chat(tokenizer, row["prompt"]) for row in rows]
    params = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
    print(f"{len(prompts)} prompts, max_new_tokens {args.max_new_tokens}, greedy, {args.dtype}, model {model}", flush=True)

    results: dict[str, dict] = {}
    for backend in args.backends:
        started = time.perf_counter()
        biggest = max(args.batch_sizes)
        with make_sampler(SamplerConfig(backend=backend), model, args.dtype, batch_size=biggest) as sampler:
            sampler.progress = False
            startup = time.perf_counter() - started
            runs = {}
            for batch_size in args.batch_sizes:
                sampler.batch_size = batch_size
                began = time.perf_counter()
                samples = sampler.generate(prompts, params)
                seconds = time.perf_counter() - began
                tokens = sum(s.completion_tokens for s in samples)
                runs[batch_size] = {"seconds": round(seconds, 2), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1)}
                print(f"{backend:>4} batch {batch_size:>3}: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.1f} tok/s", flush=True)
            texts = [s.text for s in samples]
        results[backend] = {"startup_s": round(startup, 1), "runs": runs, "texts": texts}

    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "model": str(model),
        "prompts": len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "dtype": args.dtype,
        "results": {b: {k: v for k, v in r.items() if k != "texts"} for b, r in results.items()},
    }
    if {"hf", "vllm"} <= results.keys():
        hf, vl = results["hf"], results["vllm"]
        same = sum(a == b for a, b in zip(hf["texts"], vl["texts"], strict=True))
        report["greedy_identical"] = f"{same}/{len(prompts)}"
        report["ratio"] = {
            b: round(vl["runs"][b]["tokens_per_s"] / hf["runs"][b]["tokens_per_s"], 2) for b in args.batch_sizes
        }
    print(markdown(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def markdown(report: dict) -> str:
    results = report["results"]
    backends = list(results)
    header = "| batch | " + " | ".join(f"{b} tok/s" for b in backends) + (" | vLLM/HF |" if "ratio" in report else " |")
    lines = [header, "|---:|" + "---:|" * (len(backends) + ("ratio" in report))]
    for batch in next(iter(results.values()))["runs"]:
        cells = [f"{results[b]['runs'][batch]['tokens_per_s']:.1f}" for b in backends]
        if "ratio" in report:
            cells.append(f"{report['ratio'][batch]:.2f}×")
        lines.append(f"| {batch} | " + " | ".join(cells) + " |")
    lines.append("| startup (s) | " + " | ".join(f"{results[b]['startup_s']:.1f}" for b in backends) + (" | |" if "ratio" in report else " |"))
    if "greedy_identical" in report:
        lines.append(f"\nGreedy outputs identical at the largest batch: {report['greedy_identical']} prompts.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
