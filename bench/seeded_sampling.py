"""What seeding each request inside the vLLM server costs, and what it buys, in one run on one server.

    .venv/bin/python bench/seeded_sampling.py                  # SmolLM2-135M, 80 MT-Bench prompts, batch 32
    .venv/bin/python bench/seeded_sampling.py --model tiny-llama --prompts 16 --repeats 1

Sampled (temperature 1.0, top-p 0.95) through alignflow's vLLM sampler, alternating the two modes on
the same warm server: ``seeded`` (each request drawn from its own seed by the server's logits
processor, vllm_plugins/alignflow_seeded_sampling.py) and ``server seed`` (no seed per request: the
server's one random stream). Reports completion tokens per second of wall time, and whether the
repeats of a mode drew the same answers. Prints a Markdown table and writes JSON.
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
MODES = {"seeded": True, "server seed": False}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=80, help="MT-Bench first turns to use (at most 80)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each mode, alternating")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "seeded_sampling.json")
    args = parser.parse_args()

    model = resolve_model(args.model)
    tokenizer = load_tokenizer(model)
    prompts = [render_chat(tokenizer, row["prompt"]) for row in load_rows(MT_BENCH, "prompt", limit=args.prompts).rows]
    params = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=args.max_new_tokens, seed=0)
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    with make_sampler(SamplerConfig(backend="vllm"), model, "float32", batch_size=args.batch_size) as sampler:
        sampler.progress = False
        sampler.generate(prompts[:4], params)  # warm-up: the first requests compile and fill caches
        for _ in range(args.repeats):
            for mode, seeded in MODES.items():
                sampler.seed_requests = seeded
                started = time.perf_counter()
                samples = sampler.generate(prompts, params)
                seconds = time.perf_counter() - started
                tokens = sum(s.completion_tokens for s in samples)
                runs[mode].append({"seconds": seconds, "tokens": tokens, "texts": [s.text for s in samples]})
    table = ["| mode | tokens/s (each run) | mean tokens/s | repeats drew the same answers |", "|---|---:|---:|---|"]
    summary = {}
    for mode, done in runs.items():
        rates = [r["tokens"] / r["seconds"] for r in done]
        same = sum(all(r["texts"][i] == done[0]["texts"][i] for r in done) for i in range(len(prompts)))
        summary[mode] = {"tokens_per_s": rates, "mean_tokens_per_s": sum(rates) / len(rates), "same_answers": same}
        table.append(f"| {mode} | {', '.join(f'{r:.1f}' for r in rates)} | {sum(rates) / len(rates):.1f} | {same} of {len(prompts)} |")
    print("\n".join(table))
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    setup = {"model": str(model), "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
             "batch_size": args.batch_size, "temperature": 1.0, "top_p": 0.95}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "setup": setup, "results": summary}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
