"""The counting family: items in a list, words in a sentence, letters in a word."""

from __future__ import annotations

import random
import string

from pipeline_lib.suite.item import Draft
from pipeline_lib.suite.math_tasks import number_draft
from pipeline_lib.suite.vocab import LONG_WORDS, WORDS, as_sentence, sentence_words


def _letter_in(rng: random.Random, text: str) -> str:
    """Mostly a letter the text contains; now and then one it lacks (answer 0)."""
    present = sorted({char for char in text.lower() if char.isalpha()})
    if rng.random() < 0.85:
        return rng.choice(present)
    return rng.choice([char for char in string.ascii_lowercase if char not in present])


def _count_items(rng: random.Random, low: int, high: int) -> Draft:
    items = rng.sample(WORDS, rng.randint(low, high))
    return number_draft(f"How many items are in this list: {', '.join(items)}?", len(items))


def _count_words(rng: random.Random, low: int, high: int) -> Draft:
    sentence = as_sentence(sentence_words(rng, low, high))
    return number_draft(f'How many words are in this sentence: "{sentence}"?', len(sentence.split()))


def _count_letter(rng: random.Random, text: str, what: str) -> Draft:
    letter = _letter_in(rng, text)
    question = f'How many times does the letter "{letter}" appear in the {what} "{text}"?'
    return number_draft(question, text.lower().count(letter))


def counting(rng: random.Random, difficulty: int) -> Draft:
    if difficulty == 1:
        if rng.random() < 0.5:
            return _count_items(rng, 3, 5)
        return _count_letter(rng, rng.choice(WORDS), "word")
    if difficulty == 2:
        shape = rng.randrange(3)
        if shape == 0:
            return _count_items(rng, 6, 9)
        if shape == 1:
            return _count_words(rng, 3, 6)
        return _count_letter(rng, rng.choice(LONG_WORDS), "word")
    if rng.random() < 0.5:
        return _count_words(rng, 7, 9)
    return _count_letter(rng, as_sentence(sentence_words(rng, 5, 9)), "sentence")
