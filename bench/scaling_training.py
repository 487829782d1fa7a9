"""Training throughput in process and through `accelerate launch` with 1, 2... processes (DDP), same global batch.

    .venv/bin/python bench/scaling_training.py --model tiny-llama --steps 8 --batch 4 --max-length 64

tokens/s is the Trainer's: trained (non-padding) tokens over its train runtime,
summed over the processes; wall s is the whole call, with loading Python,
the model and, through the launcher, forming the process group. Each
process takes ``batch / processes`` rows a step. On CPUs every process gets
the cores it is given (torchrun: one thread each), so the in-process run,
which uses every core, is the fair baseline there.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline_lib.training.config import TrainConfig  # noqa: E402
from pipeline_lib.training.launch import train  # noqa: E402
from pipeline_lib.training.rows import write_rows  # noqa: E402


def training(
    model: str | Path,
    rows: Sequence[dict[str, Any]],
    processes: Sequence[int] = (1, 2),
    steps: int = 8,
    batch: int = 4,
    max_length: int = 128,
) -> dict[str, dict[str, Any]]:
    """One epoch of ``steps`` SFT steps on ``steps * batch`` of ``rows`` (repeated if need be), in process and
    launched with each count of ``processes``, after one discarded in-process run; per run: processes,
    tokens/s, train runtime, wall time, final loss."""
    base = TrainConfig(lr=1e-4, epochs=1, batch_size=batch, max_length=max_length)
    runs = {"in process": base}
    for count in processes:
        runs[f"accelerate x{count}"] = TrainConfig.model_validate(
            {**base.model_dump(), "launcher": "accelerate", "distributed": {"num_processes": count}}
        )
    results = {}
    with tempfile.TemporaryDirectory(prefix="alignflow-bench-train-") as tmp:
        rows_file = Path(tmp) / "rows.parquet"
        write_rows(list(itertools.islice(itertools.cycle(rows), steps * batch)), rows_file)
        # A discarded first run: the first training in a process pays for loading code and warming caches.
        for label, config in [("warm-up", base), *runs.items()]:
            where = Path(tmp) / label.replace(" ", "-")
            (where / "model").mkdir(parents=True)
            started = time.perf_counter()
            metrics = train(model, rows_file, where / "model", config, seed=0, dtype="float32", work_dir=where / "work")
            if label == "warm-up":
                continue
            results[label] = {
                "processes": config.launched.world_size if config.launched else 1,
                "tokens_per_s": metrics["tokens_per_s"],
                "runtime_s": metrics["runtime_s"],
                "wall_s": round(time.perf_counter() - started, 1),
                "steps": metrics["steps"],
                "final_loss": metrics["final_loss"],
            }
    return results


def markdown(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| run | processes | tokens/s | train s | wall s | steps | final loss |", "|---|---|---|---|---|---|---|"]
    for label, r in results.items():
        lines.append(
            f"| {label} | {r['processes']} | {r['tokens_per_s']} | {r['runtime_s']} | {r['wall_s']} | {r['steps']} | {r['final_loss']:.4f} |"
        )
    return "\n".join(lines)


def synthetic_rows(n: int = 64) -> list[dict[str, Any]]:
    """Chat rows of varied lengths, so that batches need padding as real ones do."""
    return [
        {"prompt": [{"role": "user", "content": f"Explain item {i} of the list in a sentence or two."}],
         "completion": [{"role": "assistant", "content": f"Item {i} is the one after {i - 1}." + " It matters." * (i % 7)}]}
        for i in range(n)
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4, help="global batch (rows per step, all processes together)")
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    from pipeline_lib.models import resolve_model

    results = training(resolve_model(args.model), synthetic_rows(), args.processes, args.steps, args.batch, args.max_length)
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{len(os.sched_getaffinity(0))} CPU cores"
    # On CPUs the thread count decides more than the process count: torchrun gives each process one thread.
    print(f"{args.model} on {device}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}\n")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
