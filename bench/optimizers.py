"""Optimizer step time and memory: AdamW against OnDARE and OnTIES on a real model's parameters.

    .venv/bin/python bench/optimizers.py                        # SmolLM2-135M, p = 0.01
    .venv/bin/python bench/optimizers.py --model tiny-llama --steps 3

Every optimizer steps the same parameters with the same fresh random
gradients each step (drawn outside the timing), the three in turn within each
step; τ is a random delta of the parameters' own scale (the step cost does
not depend on its values). Time is the mean wall time of ``step()`` after one
warm-up step; memory is the optimizer state, τ included (not the working
buffers of one step). Prints a Markdown table and writes JSON.
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
from pipeline_lib.training.merging import OPTIMIZERS  # noqa: E402
from pipeline_lib.training.optimizers import ADAM  # noqa: E402


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))


def make(name: str, params: list[torch.nn.Parameter], reserve_p: float, alpha: float) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-5, **ADAM)
    deltas = {id(p): torch.randn_like(p) * p.detach().abs().mean() for p in params}
    return OPTIMIZERS[name](params, lr=1e-5, **ADAM, deltas=deltas, reserve_p=reserve_p, alpha=alpha)


def measure(
    names: tuple[str, ...], params: list[torch.nn.Parameter], steps: int, reserve_p: float, alpha: float
) -> list[dict]:
    """Each step, every optimizer in turn on the same fresh gradients: the machine's drift reaches all alike."""
    torch.manual_seed(0)
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    optimizers = {name: make(name, params, reserve_p, alpha) for name in names}
    for optimizer in optimizers.values():
        optimizer.step()  # allocates the moments
    spent: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(steps):
        # Fresh gradients every step, as in training: with one gradient repeated, Adam's |Δ| is the same
        # for every entry of a tensor, and OnTIES's top-k then ranks one long tie at every step.
        for p in params:
            p.grad.normal_(0, 1e-3)
        for name, optimizer in optimizers.items():
            started = time.perf_counter()
            optimizer.step()
            spent[name].append(time.perf_counter() - started)
    return [
        {
            "optimizer": name,
            "step_ms": round(1000 * sum(spent[name]) / steps, 1),
            "steps_ms": [round(1000 * t, 1) for t in spent[name]],
            "state_mib": round(state_bytes(optimizer) / 2**20, 1),
        }
        for name, optimizer in optimizers.items()
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--reserve-p", type=float, default=0.01)
    parser.add_argument("--alpha", type=float, default=1e-7)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "optimizers.json"))
    args = parser.parse_args()

    params = [p for p in load_causal_lm(resolve_model(args.model)).parameters() if p.requires_grad]
    n = sum(p.numel() for p in params)
    rows = measure(("adamw", "ondare", "onties"), params, args.steps, args.reserve_p, args.alpha)
    base = rows[0]["step_ms"]
    print(f"{args.model}: {n / 1e6:.1f} M parameters, p = {args.reserve_p}, α = {args.alpha}, {args.steps} steps\n")
    print("| optimizer | step (ms) | vs AdamW | state (MiB) |\n|---|---:|---:|---:|")
    for row in rows:
        row["vs_adamw"] = round(row["step_ms"] / base, 2)
        print(f"| {row['optimizer']} | {row['step_ms']} | {row['vs_adamw']}× | {row['state_mib']} |")
    result = {
        "model": args.model,
        "parameters": n,
        "reserve_p": args.reserve_p,
        "alpha": args.alpha,
        "steps": args.steps,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
