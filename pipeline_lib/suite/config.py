"""The built-in suite's recipe sections: which items exist, which ones a method trains on, how they are evaluated."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from pipeline_lib.benchmarks.bootstrap import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES
from pipeline_lib.benchmarks.config import JUDGED, Benchmark, JudgeConfig, SuiteBenchmark, benchmark_key
from pipeline_lib.core.section import Section


class SuiteConfig(Section):
    """The built-in verifiable task suite (the default dataset)."""

    families: list[str] | None = None
    difficulty: list[int] = Field(default_factory=lambda: [1, 2])
    n_train: int = Field(256, ge=0)
    n_eval: int = Field(128, ge=1)
    seed: int = 0

    def for_split(self, split: str) -> dict[str, Any]:
        """The settings one split is generated from (not the other split's size)."""
        other = "n_train" if split == "eval" else "n_eval"
        return {"split": split, **self.model_dump(exclude={other})}

    @field_validator("families")
    @classmethod
    def _known_families(cls, families: list[str] | None) -> list[str] | None:
        from pipeline_lib.suite import FAMILIES

        unknown = sorted(set(families or []) - set(FAMILIES))
        if unknown or families == []:
            raise ValueError(f"unknown or no families {unknown}; choose from {list(FAMILIES)}")
        return families

    @field_validator("difficulty")
    @classmethod
    def _known_levels(cls, levels: list[int]) -> list[int]:
        from pipeline_lib.suite import DIFFICULTIES

        if not levels or any(level not in DIFFICULTIES for level in levels):
            raise ValueError(f"levels must be a non-empty subset of {list(DIFFICULTIES)}")
        return levels


class PromptsConfig(Section):
    """The suite train items that sft, ift, dpo, spin and figa train on: items ``start`` to ``start + count``."""

    start: int = Field(0, ge=0)
    count: int | None = Field(None, ge=1, description="null: every item from start to suite.n_train")

    def stop(self, n_train: int) -> int:
        return n_train if self.count is None else self.start + self.count


class IntervalConfig(Section):
    """The paired bootstrap behind every printed difference (round K against round 0, a method against the start)."""

    resamples: int = Field(DEFAULT_RESAMPLES, ge=100)
    confidence: float = Field(DEFAULT_CONFIDENCE, gt=0, lt=1)


class EvalConfig(Section):
    max_new_tokens: int = Field(128, ge=1)
    batch_size: int = Field(32, ge=1)
    intervals: IntervalConfig | None = Field(None, description="null: 10 000 resamples, 95 % (the defaults above)")
    benchmarks: list[Benchmark] | None = Field(None, description="null: [{name: suite}]; every round runs each entry")
    judge: JudgeConfig | None = Field(None, description="grades mt_bench and pairwise entries")

    @model_validator(mode="after")
    def _benchmarks_fit(self) -> EvalConfig:
        entries = self.benchmarks
        if entries is None:
            return self
        if not entries:
            raise ValueError("benchmarks is empty: list at least one entry, e.g. [{name: suite}]")
        keys = [benchmark_key(e) for e in entries]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            raise ValueError(f"benchmarks lists {repeated} more than once; give each pairwise entry its own label")
        if not any(e.name == "suite" for e in entries):
            # Rounds are tabled, compared and plotted by the suite's score; the other entries add to it.
            raise ValueError("benchmarks must keep {name: suite}: every round's table and comparison read its score")
        judged = sorted({e.name for e in entries if e.name in JUDGED})
        if judged and self.judge is None:
            raise ValueError(f"benchmarks {judged} need a judge: set eval.judge.model or eval.judge.base_url")
        return self

    def entries(self) -> list[Benchmark]:
        """The benchmarks every round runs: the recipe's, or the suite alone."""
        return list(self.benchmarks) if self.benchmarks is not None else [SuiteBenchmark(name="suite")]
