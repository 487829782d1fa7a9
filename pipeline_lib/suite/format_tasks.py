"""The format family: write about a topic under checkable constraints.

Every item has one shape constraint (bullets, a JSON key, or a minimum length),
so a one-word reply cannot pass; each difficulty level adds one more content
constraint (lowercase, a word limit, a word to include, a word to avoid).
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

from pipeline_lib.suite.constraints import contains_word, count_words
from pipeline_lib.suite.item import Draft
from pipeline_lib.suite.topics import JSON_KEYS, TOPICS, Topic, notable_words

_EXTRAS = ["lowercase", "max_words", "include", "exclude"]
# Headroom above the reference's length for "at most N words": tighter when harder.
_WORD_SLACK = {1: 10, 2: 6, 3: 3}


def _shape(rng: random.Random, topic: Topic, facts: list[str]) -> tuple[str, str, dict[str, Any]]:
    """Instruction, reference body and constraint for the item's shape."""
    shape = rng.choice(["bullets", "json_key", "min_words"])
    if shape == "bullets":
        count = rng.randint(2, 5)
        body = "\n".join(f"- {fact}" for fact in facts[:count])
        instruction = (f"Write exactly {count} bullet points about {topic.name}, "
                       'each on its own line starting with "- ".')
        return instruction, body, {"type": "bullets", "n": count}
    if shape == "json_key":
        key = rng.choice(JSON_KEYS)
        instruction = f'Write a JSON object about {topic.name} with the key "{key}".'
        return instruction, json.dumps({key: facts[0]}), {"type": "json_key", "key": key}
    minimum = rng.choice([8, 10, 12, 15])
    chosen: list[str] = []
    while count_words(" ".join(chosen)) < minimum:
        chosen.append(facts[len(chosen)])
    instruction = f"Write at least {minimum} words about {topic.name}."
    return instruction, " ".join(chosen), {"type": "min_words", "n": minimum}


def format_task(rng: random.Random, difficulty: int) -> Draft:
    topic = rng.choice(TOPICS)
    extras = rng.sample(_EXTRAS, difficulty)
    include = rng.choice(notable_words(topic)) if "include" in extras else None
    facts = rng.sample(topic.facts, len(topic.facts))
    # The fact holding the word to include goes first, so every shape uses it.
    facts.sort(key=lambda fact: not (include and contains_word(fact, include)))
    instruction, body, shape = _shape(rng, topic, facts)
    sentences, constraints = [instruction], [shape]
    for extra in extras:
        if extra == "lowercase":
            sentences.append("Use only lowercase letters.")
            constraints.append({"type": "lowercase"})
        elif extra == "max_words":
            limit = 5 * math.ceil((count_words(body) + _WORD_SLACK[difficulty]) / 5)
            sentences.append(f"Use at most {limit} words.")
            constraints.append({"type": "max_words", "n": limit})
        elif extra == "include":
            sentences.append(f'Include the word "{include}".')
            constraints.append({"type": "include", "word": include})
        else:
            avoid = rng.choice(topic.avoid)
            sentences.append(f'Do not use the word "{avoid}".')
            constraints.append({"type": "exclude", "word": avoid})
    if shape["type"] == "json_key":
        sentences.append("Reply with only the JSON.")
    spec = {"check": "format", "constraints": constraints, "instructions": sentences}
    return Draft(" ".join(sentences), body, spec)
