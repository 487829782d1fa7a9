"""HF generate against vLLM on the same prompts, batch sizes and token budget, in one run.

    .venv/bin/python bench/sampling.py                      # SmolLM2-135M, 80 MT-Bench prompts
    .venv/bin/python bench/sampling.py --model tiny-llama --batch-sizes 1 8 --max-new-tokens 16
    .venv/bin/python bench/sampling.py --backends hf --batch-sizes 32   # HF on varied against uniform lengths

Both backends go through alignflow's own samplers (``make_sampler``), greedy,
so they generate nearly the same tokens; throughput is completion tokens per
second of wall time, startup is model load (HF) or server start to healthy
(vLLM). For vLLM "batch size" is the number of requests in flight, which is
what its scheduler batches. Each batch size runs on two prompt sets: the
questions as they are (varied: 42 to 402 tokens) and each cut or repeated to
their mean token count (uniform), so that the two differ only in how their
prompt tokens are spread. Prints a Markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import machine, save  # noqa: E402

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
    parser.add_argument(
        "--lengths", nargs="+", default=["varied", "uniform"], choices=["varied", "uniform"],
        help="varied: the questions as they are; uniform: each cut or repeated to their mean token count",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sampling.json")
    args = parser.parse_args()

    model = resolve_model(args.model)
    rows = load_rows(MT_BENCH, "prompt", limit=args.prompts).rows
    tokenizer = load_tokenizer(model)
    prompt_sets = {length: [render_chat(tokenizer, q) for q in questions(rows, tokenizer, length)] for length in args.lengths}
    prompts = prompt_sets[args.lengths[0]]  # for the counts below; every set has as many
    params = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens)
    print(f"{len(prompts)} prompts, max_new_tokens {args.max_new_tokens}, greedy, {args.dtype}, model {model}", flush=True)

    results: dict[str, dict] = {}
    for backend in args.backends:
        started = time.perf_counter()
        biggest = max(args.batch_sizes)
        with make_sampler(SamplerConfig(backend=backend), model, args.dtype, batch_size=biggest) as sampler:
            sampler.progress = False
            startup = time.perf_counter() - started
            runs: dict[str, dict] = {length: {} for length in args.lengths}
            texts: dict[str, list[str]] = {}
            for batch_size in args.batch_sizes:
                sampler.batch_size = batch_size
                for length, prompts in prompt_sets.items():  # alternating, so drift hits both alike
                    began = time.perf_counter()
                    samples = sampler.generate(prompts, params)
                    seconds = time.perf_counter() - began
                    tokens = sum(s.completion_tokens for s in samples)
                    runs[length][batch_size] = {
                        "seconds": round(seconds, 2), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1)
                    }
                    texts[length] = [s.text for s in samples]
                    print(f"{backend:>4} {length:>7} batch {batch_size:>3}: {tokens} tokens in {seconds:.1f} s "
                          f"= {tokens / seconds:.1f} tok/s", flush=True)
        results[backend] = {"startup_s": round(startup, 1), "runs": runs, "texts": texts}

    report = {
        "machine": machine(),
        "model": str(model),
        "prompts": len(prompts),
        "prompt_tokens": {length: token_spread(tokenizer, p) for length, p in prompt_sets.items()},
        "max_new_tokens": args.max_new_tokens,
        "dtype": args.dtype,
        "results": {b: {k: v for k, v in r.items() if k != "texts"} for b, r in results.items()},
    }
    if {"hf", "vllm"} <= results.keys():
        hf, vl = results["hf"], results["vllm"]
        report["greedy_identical"] = {
            length: f"{sum(a == b for a, b in zip(hf['texts'][length], vl['texts'][length], strict=True))}/{len(prompts)}"
            for length in args.lengths
        }
    print(markdown(report))
    save(report, args.out)
    return 0


def questions(rows: list[dict], tokenizer, length: str) -> list[str]:
    """The questions as they are, or each made exactly as many tokens long as the questions' mean (cut, or
    repeated from its start): the same prompt tokens in all, so only how they are spread differs."""
    texts = [row["prompt"] for row in rows]
    if length == "varied":
        return texts
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    mean = round(sum(len(i) for i in ids) / len(ids))
    return [tokenizer.decode((i * -(-mean // len(i)))[:mean]) for i in ids]


def token_spread(tokenizer, prompts: list[str]) -> dict[str, int]:
    counts = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    return {"min": min(counts), "max": max(counts), "mean": round(sum(counts) / len(counts))}


def markdown(report: dict) -> str:
    results = report["results"]
    backends = list(results)
    lengths = list(next(iter(results.values()))["runs"])
    both = {"hf", "vllm"} <= set(backends)
    header = "| prompts | batch | " + " | ".join(f"{b} tok/s" for b in backends) + (" | vLLM/HF |" if both else " |")
    lines = [header, "|---|---:|" + "---:|" * (len(backends) + both)]
    for length in lengths:
        for batch in next(iter(results.values()))["runs"][length]:
            speeds = {b: results[b]["runs"][length][batch]["tokens_per_s"] for b in backends}
            cells = [f"{speeds[b]:.1f}" for b in backends] + ([f"{speeds['vllm'] / speeds['hf']:.2f}×"] if both else [])
            lines.append(f"| {length} | {batch} | " + " | ".join(cells) + " |")
    lines.append("| startup (s) | | " + " | ".join(f"{results[b]['startup_s']:.1f}" for b in backends) + (" | |" if both else " |"))
    if len(lengths) == 2:
        for b in backends:
            runs = results[b]["runs"]
            ratios = ", ".join(
                f"batch {batch}: {runs['uniform'][batch]['tokens_per_s'] / runs['varied'][batch]['tokens_per_s']:.2f}×"
                for batch in runs["varied"]
            )
            lines.append(f"\n{b}: uniform-length over varied-length throughput, {ratios}.")
    lines.append(f"\nPrompt tokens: {report['prompt_tokens']}.")
    if "greedy_identical" in report:
        lines.append(f"Greedy outputs identical between the backends at the largest batch: {report['greedy_identical']}.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
