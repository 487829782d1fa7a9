"""alignflow's training stage against a plain TRL ``SFTTrainer`` script: same model, rows, batch, max length, steps.

    .venv/bin/python bench/training.py                  # SmolLM2-135M-Instruct, HH-RLHF conversations, 16 steps of 8
    .venv/bin/python bench/training.py --model tiny-llama --steps 4 --batch 4 --max-length 128 --repeats 1

Every run is a fresh process (``--child``), so each pays its own start-up and its peak resident memory is
its own. The runs alternate, ``--repeats`` times, so that drift on a shared machine hits them alike.

- **alignflow sft**: ``pipeline_lib.training.launch.train``, what a training stage calls, with
  ``sft_reduction: token`` (TRL's loss: the mean over all completion tokens of the batch).
- **alignflow ift**: the same rows with ``objective: ift`` (METHODS.md expects 1.3-1.4x SFT's step time).
- **trl defaults**: ``SFTTrainer(model=path, args=SFTConfig(...), train_dataset=rows)``, the few settings a
  script must give (batch, max length, epochs, learning rate, float32 as on this CPU, no saving or reporting)
  and TRL's defaults for the rest (activation checkpointing on, random batch order, padding to the longest row).
- **trl, no checkpointing**: the same with activation checkpointing off, as alignflow has it.

The rows are conversational prompt-completion rows (HH-RLHF's conversation up to its last human turn, then
the chosen answer); both sides apply the chat template and train on completion tokens only. tokens/s counts
non-padding tokens (``include_num_input_tokens_seen="non_padding"``) over the Trainer's train runtime; step
time is that runtime over the steps; peak memory is the process's maximum resident set.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import machine, save  # noqa: E402

HH = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
VARIANTS = ("alignflow sft", "trl defaults", "trl, no checkpointing", "alignflow ift")
LR = 1e-5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "training.json")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args)))
        return 0

    from pipeline_lib.models import resolve_model

    model = resolve_model(args.model)
    runs: dict[str, list[dict]] = {variant: [] for variant in args.variants}
    with tempfile.TemporaryDirectory(prefix="alignflow-bench-training-") as tmp:
        rows = Path(tmp) / "rows.parquet"
        write_hh_rows(rows, args.steps * args.batch)
        for repeat in range(args.repeats):
            for variant in args.variants:
                command = [
                    sys.executable, __file__, "--child", variant, "--rows", str(rows), "--model", str(model),
                    "--batch", str(args.batch), "--max-length", str(args.max_length),
                ]  # fmt: skip
                done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=tmp)
                if done.returncode != 0:
                    sys.exit(f"{variant} failed:\n{done.stderr[-3000:]}")
                result = json.loads(done.stdout.strip().splitlines()[-1])
                runs[variant].append(result)
                print(f"run {repeat + 1} {variant}: {result}", flush=True)
    report = {
        "machine": machine(),
        "model": str(model),
        "rows": args.steps * args.batch,
        "batch": args.batch,
        "max_length": args.max_length,
        "steps": args.steps,
        "runs": runs,
    }
    print(markdown(report))
    save(report, args.out)
    return 0


def write_hh_rows(path: Path, count: int) -> None:
    from pipeline_lib.data import load_rows
    from pipeline_lib.training.rows import write_rows

    loaded = load_rows(HH, "preference", limit=count).rows
    if len(loaded) < count:
        sys.exit(f"{HH} has {len(loaded)} usable rows; {count} wanted (steps x batch)")
    write_rows(
        [{"prompt": r["messages"], "completion": [{"role": "assistant", "content": r["chosen"]}]} for r in loaded], path
    )


def child(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="run-", dir="."))
    if variant.startswith("alignflow"):
        from pipeline_lib.training.config import TrainConfig
        from pipeline_lib.training.launch import train

        config = TrainConfig(
            objective=variant.split()[-1], sft_reduction="token", lr=LR, epochs=1,
            batch_size=args.batch, max_length=args.max_length,
        )  # fmt: skip
        metrics = train(args.model, args.rows, work / "model", config, seed=0, dtype="float32", work_dir=work / "scratch")
        runtime, steps, tokens, loss = metrics["runtime_s"], metrics["steps"], metrics["trained_tokens"], metrics["final_loss"]
    else:
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        settings = {"activation_checkpointing": False} if "no checkpointing" in variant else {}
        trainer = SFTTrainer(
            model=args.model,
            args=SFTConfig(
                output_dir=str(work), per_device_train_batch_size=args.batch, num_train_epochs=1,
                max_length=args.max_length, learning_rate=LR, seed=0, save_strategy="no", report_to="none",
                logging_steps=1, disable_tqdm=True, include_num_input_tokens_seen="non_padding",
                model_init_kwargs={"dtype": "float32"}, bf16=False, **settings,
            ),
            train_dataset=Dataset.from_parquet(str(args.rows)),
        )  # fmt: skip
        output = trainer.train()
        runtime, steps = output.metrics["train_runtime"], trainer.state.global_step
        tokens = trainer.state.num_input_tokens_seen
        loss = next(e["loss"] for e in reversed(trainer.state.log_history) if "loss" in e)
    return {
        "tokens_per_s": round(tokens / runtime, 1),
        "step_s": round(runtime / steps, 3),
        "steps": steps,
        "tokens": int(tokens),
        "final_loss": round(float(loss), 4),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def markdown(report: dict) -> str:
    runs = report["runs"]
    lines = [
        "| run | tokens/s (each run) | step s (each run) | trained tokens | peak RSS GiB | final loss |",
        "|---|---|---|---:|---:|---|",
    ]
    for variant, results in runs.items():
        each = lambda key: ", ".join(str(r[key]) for r in results)  # noqa: E731
        lines.append(
            f"| {variant} | {each('tokens_per_s')} | {each('step_s')} | {results[0]['tokens']} "
            f"| {max(r['peak_rss_gib'] for r in results)} | {each('final_loss')} |"
        )
    mean = {v: sum(r["tokens_per_s"] for r in rs) / len(rs) for v, rs in runs.items()}
    step = {v: sum(r["step_s"] for r in rs) / len(rs) for v, rs in runs.items()}
    if "alignflow sft" in mean:
        for other in ("trl defaults", "trl, no checkpointing"):
            if other in mean:
                lines.append(f"\nalignflow sft over {other}: {mean['alignflow sft'] / mean[other]:.2f}x the tokens/s")
        if "alignflow ift" in step:
            lines.append(f"IFT step time over SFT's: {step['alignflow ift'] / step['alignflow sft']:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
