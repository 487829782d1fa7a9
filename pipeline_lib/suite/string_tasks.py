"""The string_transform family: reverse, capitalise, join, take first letters."""

from __future__ import annotations

import random

from pipeline_lib.suite.item import Draft
from pipeline_lib.suite.vocab import LONG_WORDS, SHORT_WORDS, WORDS, as_sentence, sentence_words


def text_draft(prompt: str, answer: str, case_sensitive: bool = False, ignore_spaces: bool = False) -> Draft:
    spec = {"check": "text", "answer": answer, "case_sensitive": case_sensitive, "ignore_spaces": ignore_spaces}
    return Draft(prompt, answer, spec)


def _reverse_word(word: str) -> Draft:
    return text_draft(f'Reverse the letters of the word "{word}". Answer with just the reversed word.', word[::-1])


def _uppercase_word(word: str) -> Draft:
    return text_draft(f'Write the word "{word}" in capital letters. Answer with just the word.',
                      word.upper(), case_sensitive=True)


def _join_dashes(words: list[str]) -> Draft:
    prompt = f"Join these words with dashes: {', '.join(words)}. Answer with just the joined words."
    return text_draft(prompt, "-".join(words), ignore_spaces=True)


def _first_letters(words: list[str]) -> Draft:
    prompt = (f"Write the first letter of each of these words: {', '.join(words)}. "
              "Answer with just the letters, written together with no spaces.")
    return text_draft(prompt, "".join(word[0] for word in words), ignore_spaces=True)


def _reverse_sentence(words: list[str]) -> Draft:
    prompt = (f'Reverse the order of the words in this sentence: "{" ".join(words)}". '
              "Answer with just the new sentence.")
    return text_draft(prompt, " ".join(reversed(words)))


def _uppercase_sentence(words: list[str]) -> Draft:
    sentence = as_sentence(words)
    prompt = f'Rewrite this sentence in capital letters: "{sentence}" Answer with just the sentence.'
    return text_draft(prompt, sentence.upper(), case_sensitive=True)


def string_transform(rng: random.Random, difficulty: int) -> Draft:
    if difficulty == 1:
        return _uppercase_word(rng.choice(WORDS)) if rng.random() < 0.5 else _reverse_word(rng.choice(SHORT_WORDS))
    if difficulty == 2:
        shape = rng.randrange(3)
        if shape == 0:
            return _reverse_word(rng.choice(WORDS))
        words = rng.sample(WORDS, rng.randint(3, 4))
        return _join_dashes(words) if shape == 1 else _first_letters(words)
    shape = rng.randrange(4)
    if shape == 0:
        return _reverse_word(rng.choice(LONG_WORDS))
    if shape == 1:
        return _first_letters(rng.sample(WORDS, rng.randint(5, 6)))
    words = sentence_words(rng, 5, 8)
    return _reverse_sentence(words) if shape == 2 else _uppercase_sentence(words)
