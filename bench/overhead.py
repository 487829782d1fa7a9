"""Orchestration overhead: the share of a run's wall time spent outside stage compute, then a fully cached rerun.

    .venv/bin/python bench/overhead.py configs/sft-tiny.yaml configs/seft-tiny.yaml
    .venv/bin/python bench/overhead.py configs/seft.yaml          # the demo (about 15 minutes, then the rerun)

Each recipe runs as a user runs it (``alignflow run``, a new process) in a fresh ``$ALIGNFLOW_HOME``, then
once more in the same home, where every stage is reused. Stage compute is the sum of the ``seconds`` each
stage's manifest records for its body (loading its model, sampling, training, writing its folder). A
built-in model built into the fresh home (SmolLM2's GGUF converted; its manifest's ``seconds``) is compute
too, counted apart as model build. Overhead is the rest of the wall time: starting Python and Prefect's
server, flow and task-run bookkeeping, MLflow logging, hashing stage inputs, checking reused folders and
linking the run folder. Per-stage seconds are printed too (docs/seft.md keeps the demo's).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import machine, save  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="+")
    parser.add_argument("--home", type=Path, help="run here instead of a fresh temporary home (kept afterwards)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "overhead.json")
    args = parser.parse_args()
    report = {"machine": machine(), "recipes": {}}
    for recipe in args.recipes:
        with tempfile.TemporaryDirectory(prefix="alignflow-bench-overhead-") as tmp:
            home = args.home or Path(tmp)
            first = timed_run(recipe, home)
            rerun = timed_run(recipe, home)
        report["recipes"][recipe] = {"first": first, "cached rerun": rerun}
        print(f"{recipe}: {json.dumps(report['recipes'][recipe])}", flush=True)
    print(markdown(report))
    save(report, args.out)
    return 0


def timed_run(recipe: str, home: Path) -> dict:
    """Wall seconds of one ``alignflow run``, the seconds of the stages it built, and what is left over."""
    started = time.time()
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "alignflow"), "run", recipe],
        env={**os.environ, "ALIGNFLOW_HOME": str(home)}, cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.time() - started
    if done.returncode != 0:
        sys.exit(f"{recipe} failed:\n{done.stderr[-3000:]}")
    built = {}
    for manifest in (home / "stages").glob("*/*/manifest.json"):
        record = json.loads(manifest.read_text())
        if record.get("started_at", 0) >= started:
            built[f"{record['stage']}/{manifest.parent.name[:8]}"] = record["seconds"]
    # A built-in model built for this home (SmolLM2's GGUF converted to safetensors) is compute too: the
    # provision-model task does it outside any stage folder, once per home.
    models = {}
    for manifest in (home / "models").glob("*/manifest.json"):
        record = json.loads(manifest.read_text())
        if datetime.fromisoformat(record.get("created_at", "1970-01-01T00:00:00+00:00")).timestamp() >= int(started):
            models[manifest.parent.name] = record["seconds"]
    compute = sum(built.values()) + sum(models.values())
    return {
        "wall_s": round(wall, 1),
        "stage_compute_s": round(sum(built.values()), 1),
        "model_build_s": round(sum(models.values()), 1),
        "overhead_s": round(wall - compute, 1),
        "overhead_share": round((wall - compute) / wall, 4),
        "stages_built": len(built),
        "stage_seconds": dict(sorted(built.items(), key=lambda item: -item[1])),
        "models_built": models,
    }


def markdown(report: dict) -> str:
    lines = [
        "| recipe | run | wall s | stage compute s | model build s | overhead s | overhead share | stages built |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for recipe, runs in report["recipes"].items():
        for label, r in runs.items():
            lines.append(
                f"| {recipe} | {label} | {r['wall_s']} | {r['stage_compute_s']} | {r['model_build_s']} | {r['overhead_s']} "
                f"| {100 * r['overhead_share']:.1f} % | {r['stages_built']} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
