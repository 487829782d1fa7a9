"""Judge prompts for MT-Bench and AlpacaEval, built the way the published harnesses build them.

A judge score is only comparable with the published numbers if the judge read
the same words, so the templates come from the official files (paths given by
the caller) and are filled exactly as FastChat's `llm_judge` and AlpacaEval do.
Every template carries a version id, a digest of its text, so a stored
judgment can be keyed by the words the judge saw: edit a template and every
judgment made with the old one stops matching.

    prompts = load_judge_prompts(data / "mt-bench-judge-prompts.jsonl")
    questions = load_questions(data / "mt-bench-questions.jsonl")
    refs = load_references(data / "mt-bench-reference-gpt4.jsonl")
    built = single_judge_messages(prompts, q, answers, turn=2, reference=refs.get(q.question_id))
    built.messages  # [{"role": "system", ...}, {"role": "user", ...}]
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline_lib.core.hashing import hash_json

Message = dict[str, str]
Kind = Literal["single", "pairwise"]

# FastChat's NEED_REF_CATS (less its arena-hard-200 set): these are graded against the GPT-4 reference.
REFERENCE_CATEGORIES: frozenset[str] = frozenset({"math", "reasoning", "coding"})

# FastChat's temperature_config. Categories with one right answer are decoded greedily.
CATEGORY_TEMPERATURES: dict[str, float] = {
    "writing": 0.7,
    "roleplay": 0.7,
    "extraction": 0.0,
    "math": 0.0,
    "coding": 0.0,
    "reasoning": 0.0,
    "stem": 0.1,
    "humanities": 0.1,
}
DEFAULT_TEMPERATURE = 0.7  # what FastChat's gen_model_answer uses for a category not in its table
VERSION_CHARS = 12


def _digest(value: object) -> str:
    return hash_json(value)[:VERSION_CHARS]


def _read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# ---------------------------------------------------------------- MT-Bench


@dataclass(frozen=True)
class JudgePrompt:
    """One line of FastChat's judge_prompts.jsonl."""

    name: str
    kind: Kind
    system_prompt: str
    prompt_template: str
    output_format: str  # "[[rating]]" for single grading, "[[A]]" for pairwise
    category: str = ""
    description: str = ""

    @property
    def multi_turn(self) -> bool:
        return self.name.endswith("-multi-turn")

    @property
    def reference_based(self) -> bool:
        return "{ref_answer_1}" in self.prompt_template

    @property
    def version(self) -> str:
        # Name included: two prompts with equal text but different roles must not share judgments.
        return _digest([self.name, self.system_prompt, self.prompt_template, self.output_format])


@dataclass(frozen=True)
class Question:
    question_id: int
    category: str
    turns: tuple[str, ...]

    @property
    def temperature(self) -> float:
        return generation_temperature(self.category)


@dataclass(frozen=True)
class BuiltPrompt:
    """The messages for the judge, and which template (name and version) produced them."""

    messages: list[Message]
    template: str
    version: str


def generation_temperature(category: str) -> float:
    return CATEGORY_TEMPERATURES.get(category, DEFAULT_TEMPERATURE)


def load_judge_prompts(path: str | Path) -> dict[str, JudgePrompt]:
    prompts = {}
    for row in _read_jsonl(path):
        if row["type"] not in ("single", "pairwise"):
            raise ValueError(f"{path}: judge prompt {row['name']!r} has unknown type {row['type']!r}")
        prompts[row["name"]] = JudgePrompt(
            name=row["name"],
            kind=row["type"],
            system_prompt=row["system_prompt"],
            prompt_template=row["prompt_template"],
            output_format=row["output_format"],
            category=row.get("category", ""),
            description=row.get("description", ""),
        )
    return prompts


def load_questions(path: str | Path) -> list[Question]:
    # The file's own `reference` field is not read: FastChat grades with the separate GPT-4 reference file.
    return [Question(int(r["question_id"]), r["category"], tuple(r["turns"])) for r in _read_jsonl(path)]


def load_references(path: str | Path) -> dict[int, tuple[str, ...]]:
    """Reference answers by question id: the turns of each record's first choice, as FastChat reads them."""
    return {int(r["question_id"]): tuple(r["choices"][0]["turns"]) for r in _read_jsonl(path)}


def judge_prompt_name(category: str, turn: int, kind: Kind = "single") -> str:
    """The template FastChat's gen_judgment pairs with a category and turn."""
    if turn not in (1, 2):
        raise ValueError(f"MT-Bench has turns 1 and 2, not {turn}")
    math = category in REFERENCE_CATEGORIES
    base = ("single-math-v1" if math else "single-v1") if kind == "single" else ("pair-math-v1" if math else "pair-v2")
    return base + ("-multi-turn" if turn == 2 else "")


def _fill(
    prompt: JudgePrompt,
    question: Question,
    turn: int,
    reference: Sequence[str] | None,
    answers: dict[str, Sequence[str]],
) -> BuiltPrompt:
    need = turn  # turn 2's prompt shows the whole conversation, so both answers of each side
    for side, given in answers.items():
        if len(given) < need:
            raise ValueError(f"question {question.question_id}: turn {turn} needs {need} answer(s) for {side}")
    kwargs: dict[str, str] = {}
    if prompt.reference_based:
        if reference is None or len(reference) < need:
            raise ValueError(f"question {question.question_id} ({question.category}) needs a reference answer")
        kwargs["ref_answer_1"] = reference[0]
        if turn == 2:
            kwargs["ref_answer_2"] = reference[1]
    if turn == 2:
        kwargs |= {"question_1": question.turns[0], "question_2": question.turns[1]}
        for suffix, given in answers.items():
            kwargs |= {f"answer{suffix}_1": given[0], f"answer{suffix}_2": given[1]}
    else:
        kwargs["question"] = question.turns[0]
        kwargs |= {f"answer{suffix}": given[0] for suffix, given in answers.items()}
    # str.format parses only the template, so braces inside answers are safe (FastChat formats the same way).
    user = prompt.prompt_template.format(**kwargs)
    messages = [{"role": "system", "content": prompt.system_prompt}, {"role": "user", "content": user}]
    return BuiltPrompt(messages, prompt.name, prompt.version)


def single_judge_messages(
    prompts: dict[str, JudgePrompt],
    question: Question,
    answers: Sequence[str],
    turn: int,
    reference: Sequence[str] | None = None,
) -> BuiltPrompt:
    """Single-answer grading of one model's answer(s) to `question` at `turn` (1 or 2).

    `answers` are the model's answers to the turns in order; turn 2 needs both.
    `reference` (the GPT-4 answers) is required for math, reasoning and coding and ignored otherwise.
    """
    prompt = prompts[judge_prompt_name(question.category, turn, "single")]
    return _fill(prompt, question, turn, reference, {"": answers})


def pairwise_judge_messages(
    prompts: dict[str, JudgePrompt],
    question: Question,
    answers_a: Sequence[str],
    answers_b: Sequence[str],
    turn: int,
    reference: Sequence[str] | None = None,
) -> BuiltPrompt:
    """Pairwise grading: `answers_a` shown as Assistant A, `answers_b` as Assistant B; swap to judge the other order."""
    prompt = prompts[judge_prompt_name(question.category, turn, "pairwise")]
    return _fill(prompt, question, turn, reference, {"_a": answers_a, "_b": answers_b})


# ---------------------------------------------------------------- AlpacaEval

ALPACA_LABELS: tuple[str, str] = ("m", "M")  # "m" names the output in the first slot, "M" the second
_CHATML = re.compile(r"<\|im_start\|>(\S+)[^\n]*\n(.*?)<\|im_end\|>", re.DOTALL)
_ALPACA_FIELD = re.compile(r"\{(instruction|output_1|output_2)\}")


@dataclass(frozen=True)
class AlpacaTemplate:
    """AlpacaEval's ChatML judge prompt, split into messages still holding their placeholders."""

    messages: tuple[tuple[str, str], ...]  # (role, content)
    version: str


def parse_alpaca_template(text: str) -> AlpacaTemplate:
    """Split a ChatML prompt into (role, content) pairs, each content stripped as AlpacaEval's prompt_to_chatml does."""
    messages = tuple((role, content.strip()) for role, content in _CHATML.findall(text))
    if not messages:
        raise ValueError("no <|im_start|>role ... <|im_end|> messages in the AlpacaEval judge prompt")
    placeholders = {m for _, content in messages for m in _ALPACA_FIELD.findall(content)}
    missing = {"instruction", "output_1", "output_2"} - placeholders
    if missing:
        raise ValueError(f"AlpacaEval judge prompt lacks placeholders {sorted(missing)}")
    return AlpacaTemplate(messages, hashlib.sha256(text.encode()).hexdigest()[:VERSION_CHARS])


def load_alpaca_template(path: str | Path) -> AlpacaTemplate:
    return parse_alpaca_template(Path(path).read_text(encoding="utf-8"))


def alpaca_judge_messages(template: AlpacaTemplate, instruction: str, first: str, second: str) -> list[Message]:
    """Fill the template: `first` is shown as identifier "m" ({output_1}), `second` as "M" ({output_2}).

    The caller picks the order (both orders, or `alpaca_switched` for AlpacaEval's seeded random one).
    AlpacaEval fills the raw text with sequential str.replace and then splits the ChatML; we split first
    and substitute in one pass, which gives the same messages except that an output containing
    "<|im_start|>" or a placeholder such as "{output_2}" cannot corrupt the prompt.
    """
    values = {"instruction": instruction, "output_1": first, "output_2": second}
    return [
        {"role": role, "content": _ALPACA_FIELD.sub(lambda m: values[m.group(1)], content)}
        for role, content in template.messages
    ]


def alpaca_switched(key: str, seed: int = 0) -> bool:
    """Whether to show the model's output first for this item: a coin seeded by the item, stable across runs.

    AlpacaEval seeds a coin per item from the instruction and puts the baseline in the first slot unless the
    coin says switch; we derive the coin from sha256 (not Python's hash(), which varies per process).
    """
    return hashlib.sha256(f"{seed}\0{key}".encode()).digest()[0] & 1 == 1
