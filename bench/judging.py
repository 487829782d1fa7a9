"""Judging throughput: log-probability preferences against generated verdicts, HF against vLLM, in one run.

    .venv/bin/python bench/judging.py                       # SmolLM2-135M judging 48 AlpacaEval pairs
    .venv/bin/python bench/judging.py --model tiny-llama --pairs 8

Each judgment is one AlpacaEval 2.0 prompt holding an instruction, the
official baseline's output and a second output (the baseline output of the
next instruction, so both are real text of realistic length). The judge goes
through alignflow's own judge (``LocalJudge`` on ``make_sampler``):
``logprobs`` reads P(m) and P(M) with the sampler's constrained choice (one
scoring pass); ``verdict`` generates up to ``--verdict-tokens`` tokens
greedily and parses the label. Judgments per second of wall time, after the
model is loaded or the server is healthy. Prints a Markdown table and writes JSON.
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

from pipeline_lib.benchmarks.config import JudgeConfig  # noqa: E402
from pipeline_lib.benchmarks.judge import LocalJudge  # noqa: E402
from pipeline_lib.benchmarks.pairwise import judgment  # noqa: E402
from pipeline_lib.benchmarks.prompts import ALPACA_LABELS, alpaca_judge_messages, load_alpaca_template  # noqa: E402
from pipeline_lib.data import load_rows  # noqa: E402
from pipeline_lib.models import load_tokenizer, resolve_model  # noqa: E402
from pipeline_lib.sampling import make_sampler, render_chat  # noqa: E402
from pipeline_lib.sampling.config import SamplerConfig  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--verdict-tokens", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--backends", nargs="+", default=["hf", "vllm"], choices=["hf", "vllm"])
    parser.add_argument("--modes", nargs="+", default=["logprobs", "verdict"], choices=["logprobs", "verdict"],
                        help="in this order: on vLLM the second mode finds the prompts in the prefix cache")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "judging.json")
    args = parser.parse_args()

    model = resolve_model(args.model)
    rows = load_rows(DATA / "alpaca-eval-gpt4-turbo-outputs.jsonl.gz", "sft", {"prompt": "instruction", "response": "output"},
                     limit=args.pairs + 1).rows  # fmt: skip
    template = load_alpaca_template(DATA / "alpaca-eval-judge-prompt.txt")
    conversations = [
        alpaca_judge_messages(template, rows[i]["prompt"], rows[i]["response"], rows[i + 1]["response"]) for i in range(args.pairs)
    ]
    tokenizer = load_tokenizer(model)
    prompt_tokens = sum(len(tokenizer(render_chat(tokenizer, c), add_special_tokens=False)["input_ids"]) for c in conversations)
    print(f"{args.pairs} judgments, {prompt_tokens / args.pairs:.0f} prompt tokens each, model {model}", flush=True)

    results = []
    for backend in args.backends:
        config = JudgeConfig(model=str(model), max_new_tokens=args.verdict_tokens, batch_size=args.batch_size)
        started = time.perf_counter()
        sampler = make_sampler(SamplerConfig(backend=backend, batch_size=args.batch_size), model, batch_size=args.batch_size)
        ready = time.perf_counter() - started
        judge = LocalJudge(sampler, tokenizer, config)
        try:
            if backend == "vllm":
                judge.choose(conversations[:2], ALPACA_LABELS)  # the first scoring call compiles a kernel (~20 s)
            for mode in args.modes:
                started = time.perf_counter()
                if mode == "logprobs":
                    records = [{"text": c.text, "logprobs": c.logprobs} for c in judge.choose(conversations, ALPACA_LABELS)]
                else:
                    records = [{"text": text, "logprobs": None} for text in judge.generate(conversations)]
                seconds = time.perf_counter() - started
                parsed = sum(judgment(r) is not None for r in records)
                results.append({"backend": backend, "mode": mode, "judgments": len(records), "seconds": round(seconds, 2),
                                "judgments_per_s": round(len(records) / seconds, 2), "parsed": parsed,
                                "startup_s": round(ready, 1)})  # fmt: skip
                print(json.dumps(results[-1]), flush=True)
        finally:
            judge.close()

    print("\n| backend | preference | judgments/s | parsed | startup (s) |\n|---|---|---:|---:|---:|")
    for r in results:
        print(f"| {r['backend']} | {r['mode']} | {r['judgments_per_s']:.2f} | {r['parsed']}/{r['judgments']} | {r['startup_s']:.0f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "model": str(model), "pairs": args.pairs,
            "prompt_tokens_mean": prompt_tokens / args.pairs, "verdict_tokens": args.verdict_tokens, "batch_size": args.batch_size}  # fmt: skip
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
