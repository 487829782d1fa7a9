"""The recipe's ``eval.benchmarks`` entries and ``eval.judge``: what every round is evaluated on, and who judges.

Paths default to the copies of the published files in ``../shared/data`` (the
project's data folder beside a checkout); point them anywhere else, or at a
hub dataset for prompt sets.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from pipeline_lib.core.section import Section
from pipeline_lib.data.config import DataSource

DATA = "../shared/data"
ALPACA_FILE = f"{DATA}/alpaca-eval-gpt4-turbo-outputs.jsonl.gz"


class JudgeConfig(Section):
    """The model that grades answers: one alignflow serves (``model``), or any OpenAI-compatible endpoint."""

    model: str | None = Field(None, description="a model reference, served like the sampler's models (vLLM or HF)")
    base_url: str | None = Field(None, description="an OpenAI-compatible server: vLLM, llama.cpp, a hosted API")
    served_model_name: str | None = Field(None, description="the model name the endpoint serves (with base_url)")
    api_key_env: str | None = Field(None, description="the environment variable holding the endpoint's API key")
    max_new_tokens: int = Field(512, ge=1, description="longest judgment (MT-Bench's explanation and [[rating]])")
    temperature: float = Field(0.0, ge=0.0)
    batch_size: int = Field(8, ge=1, description="judgments in flight (endpoint) or per batch (HF)")

    @model_validator(mode="after")
    def _one_judge(self) -> JudgeConfig:
        if (self.model is None) == (self.base_url is None):
            raise ValueError("give the judge either model (a model alignflow serves) or base_url (an endpoint), not both")
        if self.base_url is not None:
            if not self.base_url.startswith(("http://", "https://")):
                raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
            if not self.served_model_name:
                raise ValueError("base_url needs served_model_name: the model the endpoint must serve")
        elif self.served_model_name or self.api_key_env:
            raise ValueError("served_model_name and api_key_env go with base_url, not with model")
        return self


class SuiteBenchmark(Section):
    """The built-in verifiable suite (the ``suite`` section's held-out split)."""

    name: Literal["suite"]


class MTBenchBenchmark(Section):
    """MT-Bench: 80 two-turn questions, graded 1-10 by the judge with FastChat's prompts."""

    name: Literal["mt_bench"]
    questions: str = f"{DATA}/mt-bench-questions.jsonl"
    references: str = f"{DATA}/mt-bench-reference-gpt4.jsonl"
    judge_prompts: str = f"{DATA}/mt-bench-judge-prompts.jsonl"
    limit: int | None = Field(None, ge=1, description="the first N questions (in file order); null: all 80")
    max_new_tokens: int = Field(1024, ge=1, description="per answer turn (FastChat's default)")
    rating_fallback: bool = Field(
        True, description="a judgment without [[rating]] gets the judge's likeliest rating after its own words (served judges)"
    )


class PairwiseBaseline(Section):
    """What the round's answers are judged against: a file of outputs, or a model's greedy answers."""

    outputs: DataSource | None = Field(None, description="a file of (prompt, response) rows, joined to the prompts by text")
    model: str | None = Field(None, description="'round0', 'previous', or a model reference")

    @model_validator(mode="after")
    def _one_baseline(self) -> PairwiseBaseline:
        if (self.outputs is None) == (self.model is None):
            raise ValueError("give the baseline either outputs (a file) or model, not both")
        return self


def _alpaca_baseline() -> PairwiseBaseline:
    return PairwiseBaseline(outputs=DataSource(source=ALPACA_FILE, columns={"prompt": "instruction", "response": "output"}))


class PairwiseBenchmark(Section):
    """The round's answers against a baseline's, one preference per prompt (AlpacaEval 2.0 by default)."""

    name: Literal["pairwise"]
    label: str | None = Field(None, pattern=r"^[a-z0-9_]+$", description="metric prefix pairwise_<label> (several pairwise entries)")
    prompts: DataSource = Field(default_factory=lambda: DataSource(source=ALPACA_FILE, columns={"prompt": "instruction"}))
    baseline: PairwiseBaseline = Field(default_factory=_alpaca_baseline)
    template: str = Field(f"{DATA}/alpaca-eval-judge-prompt.txt", description="AlpacaEval's ChatML judge prompt")
    limit: int | None = Field(None, ge=1, description="the first N prompts; null: all")
    orders: Literal["both", "random"] = Field("both", description="both: each pair judged in both orders; random: one seeded order")
    preference: Literal["logprobs", "verdict"] = Field(
        "logprobs", description="logprobs: read p(m) and p(M) (AlpacaEval's weighted annotator); verdict: parse a generated answer"
    )
    max_new_tokens: int = Field(1024, ge=1, description="per answer")

    @property
    def prefix(self) -> str:
        return f"pairwise_{self.label}" if self.label else "pairwise"


class LmEvalBenchmark(Section):
    """lm-evaluation-harness tasks through its Python API; ``alignflow_suite`` is the suite's held-out split."""

    name: Literal["lm_eval"]
    tasks: list[str] = Field(default_factory=lambda: ["alignflow_suite"], min_length=1)
    include_path: str | None = Field(None, description="a folder of task YAMLs of your own")
    limit: float | None = Field(None, gt=0, description="examples per task (a fraction when < 1)")
    num_fewshot: int | None = Field(None, ge=0)
    max_new_tokens: int = Field(128, ge=1, description="alignflow_suite's longest answer")


Benchmark = Annotated[
    Union[SuiteBenchmark, MTBenchBenchmark, PairwiseBenchmark, LmEvalBenchmark], Field(discriminator="name")
]
JUDGED = ("mt_bench", "pairwise")


def benchmark_key(entry: Section) -> str:
    """The name an entry's metrics, stages and columns go by: unique in a recipe."""
    return entry.prefix if isinstance(entry, PairwiseBenchmark) else entry.name
