"""A training step's forward and backward with logits on every position against logits on the response spans.

    .venv/bin/python bench/response_logits.py                              # SmolLM2-135M
    .venv/bin/python bench/response_logits.py --model tiny-llama --steps 5
    .venv/bin/python bench/response_logits.py --loss token                 # sft_reduction: token (the demo's)

The batch is the reviser's shape: long inputs (the instructions, the prompt
and the sample), short targets. Both variants run the same SFT loss on the
same random batch (``sequence``: each row's mean, ``sft_loss``; ``token``:
the model's own mean over every labelled token, as the Trainer calls it on
CPU), in turn within each step, after one warm-up step each; the time is the
mean wall time of forward, loss and backward. Prints a
Markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline_lib.models import load_causal_lm, resolve_model  # noqa: E402
from pipeline_lib.training.logits import response_logits, with_response_logits  # noqa: E402
from pipeline_lib.training.losses import IGNORE_INDEX, sft_loss  # noqa: E402


def step(model: torch.nn.Module, batch: dict[str, torch.Tensor], spans: bool, loss_kind: str) -> float:
    started = time.perf_counter()
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if loss_kind == "token":
        labelled = {**inputs, "labels": batch["labels"]}
        loss = model(**(with_response_logits(model, labelled) if spans else labelled)).loss
    elif spans:
        logits, kept = response_logits(model, batch["labels"], **inputs)
        loss = sft_loss(logits, kept.take(batch["labels"], IGNORE_INDEX))
    else:
        loss = sft_loss(model(**inputs).logits, batch["labels"])
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=320, help="tokens per row")
    parser.add_argument("--target", type=int, default=32, help="trained tokens at the end of each row")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--loss", choices=["sequence", "token"], default="sequence", help="the SFT reduction")
    parser.add_argument("--out", help="default: bench/results/response_logits.json (token: response_logits-token.json)")
    args = parser.parse_args()
    args.out = args.out or str(ROOT / "bench" / "results" / f"response_logits{'-token' if args.loss == 'token' else ''}.json")

    model = load_causal_lm(resolve_model(args.model))
    model.train()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.length), generator=generator)
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, -args.target :] = ids[:, -args.target :]
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

    times: dict[str, list[float]] = {"every position": [], "response spans": []}
    for warm in (True, *[False] * args.steps):
        for name, spans in (("every position", False), ("response spans", True)):
            seconds = step(model, batch, spans, args.loss)
            if not warm:
                times[name].append(seconds)
    means = {name: 1000 * sum(t) / len(t) for name, t in times.items()}
    base = means["every position"]
    print(f"{args.model}: {args.loss} loss, batch {args.batch} × {args.length} tokens, {args.target} trained per row, {args.steps} steps, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    print("| logits on | ms per step | vs every position |\n|---|---:|---:|")
    for name, ms in means.items():
        print(f"| {name} | {ms:.1f} | {ms / base:.2f}× |")
    record = {"model": args.model, "loss": args.loss, "batch": args.batch, "length": args.length, "target": args.target, "steps": args.steps,
              "ms": means, "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
