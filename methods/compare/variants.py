"""``compare-methods``: one recipe per contestant, derived from the comparison recipe, and the leaderboard.

Every variant starts from the same model, trains on the same prompts (SEFT's
unannotated pool: items ``reviser.n_prompts`` on, ``seft.pool_prompts`` of
them, the same every round) and gets the same training-token budget, split
evenly over its training rounds (SPIN's iterations, SEFT's rounds). The
reviser SEFT and FIGA share is trained once and is not counted in it: it
trains the reviser, not the policy.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from methods import METHODS, SECTIONS
from methods.compare.config import MethodVariant
from methods.recipe import Recipe, validate_recipe
from pipeline_lib.config import apply_override
from methods.data import replaces_suite_prompts
from pipeline_lib.data.config import DATA_ROLES
from pipeline_lib.core.errors import UserError
from pipeline_lib.reporting import metrics as m
from pipeline_lib.reporting.tables import render_markdown
from pipeline_lib.benchmarks.bootstrap import describe_interval
from pipeline_lib.store import read_manifest


def variant_recipe(compare: Recipe, variant: MethodVariant, results: dict[str, str]) -> Recipe:
    """The recipe ``variant`` runs: the comparison's settings, its method's sections, its overrides.

    ``results`` maps ``base`` and the labels already run to model folders, for
    ``@name`` in override values (SEFT + OnDARE takes τ from ``@sft``).
    """
    raw = copy.deepcopy(compare.to_dict())
    raw.pop("compare")
    raw["method"], raw["name"] = variant.method, f"{compare.name}-{variant.label}"
    kept = METHODS[variant.method].sections
    for section in SECTIONS:
        if section not in kept or raw.get(section) is None:
            raw.pop(section, None)
    if variant.method == "figa" and (raw.get("figa") or {}).get("revised_from") == "reference":
        raw.pop("reviser", None)
    raw["train"].pop("objective", None)
    if raw.get("data"):
        # The comparison's datasets, each to the contestants whose method reads it (the others use the suite).
        raw["data"] = {k: v for k, v in raw["data"].items() if k not in DATA_ROLES or k in METHODS[variant.method].roles}
    for item in variant.overrides:
        apply_override(raw, _substitute(item, results, variant.label))
    own_prompts = any(item.startswith("prompts.") for item in variant.overrides)
    if compare.seft is not None and compare.reviser is not None and not own_prompts and not _trains_on_user_data(raw):
        raw["prompts"] = {"start": compare.reviser.n_prompts, "count": compare.seft.pool_prompts}
        if "seft" in raw:
            raw["seft"]["fresh_prompts"] = False
    origin = f"compare.methods[{variant.label}]"
    recipe = validate_recipe(raw, origin=origin)
    if compare.compare.token_budget is not None:
        rounds = METHODS[recipe.method].training_rounds(recipe)
        raw["train"]["max_tokens"] = max(1, compare.compare.token_budget // rounds)
        recipe = validate_recipe(raw, origin=origin)
    return recipe


def _trains_on_user_data(raw: dict[str, Any]) -> bool:
    """Whether the contestant's training rows come from the user's data instead of the shared suite prompts."""
    return any(
        value not in (None, "suite", [{"source": "suite"}]) and replaces_suite_prompts(raw["method"], role)
        for role, value in (raw.get("data") or {}).items()
        if role in DATA_ROLES
    )


def contestant_needs(variants: list[MethodVariant]) -> dict[str, set[str]]:
    """Which earlier contestants each contestant's overrides name (``@sft``); ``@base`` is not one.

    Contestants that need nothing of each other may run at once
    (``orchestration``); one that names a later contestant, or no contestant,
    fails here as it would when run in order.
    """
    seen: list[str] = []
    needs: dict[str, set[str]] = {}
    for variant in variants:
        named = set()
        for item in variant.overrides:
            key, sep, value = item.partition("=")
            if sep and value.startswith("@") and value[1:] != "base":
                if value[1:] not in seen:
                    raise UserError(
                        f"compare.methods[{variant.label}]: override {item!r} names {value}, which has not run before it; "
                        f"available: {', '.join('@' + n for n in ['base', *seen])}"
                    )
                named.add(value[1:])
        needs[variant.label] = named
        seen.append(variant.label)
    return needs


def _substitute(item: str, results: dict[str, str], label: str) -> str:
    key, sep, value = item.partition("=")
    if sep and value.startswith("@"):
        name = value[1:]
        if name not in results:
            raise UserError(
                f"compare.methods[{label}]: override {item!r} names {value}, which has not run before it; "
                f"available: {', '.join('@' + n for n in results)}"
            )
        return f"{key}={results[name]}"
    return item


def wall_seconds(variant_root: Path) -> float:
    """Compute time of a variant: its stages' build times (reused ones count what they cost when built),
    without round 0, which evaluates the shared starting model."""
    total = 0.0
    for group in variant_root.iterdir():
        if not group.is_dir() or group.name == "round-0":
            continue
        for stage in group.iterdir():
            manifest = read_manifest(stage.resolve()) or {}
            total += float(manifest.get("seconds", 0.0))
    return round(total, 1)


def train_tokens(variant_root: Path) -> int:
    """Tokens the policy was trained on, over all rounds."""
    total = 0
    for policy in variant_root.glob("round-*/train-policy"):
        total += int(((read_manifest(policy.resolve()) or {}).get("train") or {}).get("trained_tokens") or 0)
    return total


def leaderboard_row(label: str, final: dict[str, float], variant_root: Path) -> dict[str, Any]:
    return {
        "method": label,
        "score": round(final[m.EVAL_SCORE], 4),
        "pass_rate": round(final[m.EVAL_PASS_RATE], 4),
        "length": round(final[m.EVAL_LENGTH], 1),
        # Against the start (every contestant's round 0 is the same model on the same prompts).
        "score_delta": final.get(m.EVAL_SCORE_DELTA),
        "score_delta_low": final.get(m.EVAL_SCORE_DELTA_LOW),
        "score_delta_high": final.get(m.EVAL_SCORE_DELTA_HIGH),
        "wall_s": wall_seconds(variant_root),
        "train_tokens": train_tokens(variant_root),
        # eval.benchmarks' main numbers, each with its change from the start when it has one.
        "benchmarks": {name: final[name] for name in m.headlines(final)},
        "benchmark_deltas": {name: delta for name in m.headlines(final) if (delta := _delta(final, name))},
    }


def _delta(final: dict[str, float], name: str) -> list[float] | None:
    """A benchmark's change from the start, with its interval: of MT-Bench's score, of a pairwise win rate."""
    prefix = name.split("/")[0]
    if name.endswith("lc_win_rate") or f"{prefix}/delta" not in final:
        return None
    return [final[f"{prefix}/delta{end}"] for end in ("", "_low", "_high")]


def leaderboard_markdown(rows: list[dict[str, Any]], start: dict[str, float]) -> str:
    """The leaderboard, best held-out score first, with the starting model as the first line."""
    first = [f"{start[m.EVAL_SCORE]:.3f}", f"{start[m.EVAL_PASS_RATE]:.3f}", f"{start[m.EVAL_LENGTH]:.1f}"]
    benchmarks = sorted({name for row in rows for name in row.get("benchmarks", {})})
    table = [
        ["method", "held-out score", "against start (95 % CI)", "pass rate", "length (tokens)", "wall time (s)",
         "training tokens", *benchmarks],
        ["*start*", first[0], "–", *first[1:], "–", "–", *(_number(start.get(name)) for name in benchmarks)],
    ]  # fmt: skip
    for row in sorted(rows, key=lambda r: -r["score"]):
        bounds = (row["score_delta"], row["score_delta_low"], row["score_delta_high"])
        against_start = describe_interval(*bounds) if None not in bounds else "–"
        table.append([
            row["method"], f"{row['score']:.3f}", against_start, f"{row['pass_rate']:.3f}",
            f"{row['length']:.1f}", f"{row['wall_s']:.0f}", str(row["train_tokens"]),
            *(_benchmark_cell(row, name) for name in benchmarks),
        ])  # fmt: skip
    return render_markdown(table, right=range(1, 7 + len(benchmarks)))


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _benchmark_cell(row: dict[str, Any], name: str) -> str:
    """The benchmark's number, and its change from the start with the paired interval (win rates and scores)."""
    value = _number(row.get("benchmarks", {}).get(name))
    delta = row.get("benchmark_deltas", {}).get(name)
    return f"{value} ({describe_interval(*delta)})" if delta else value
