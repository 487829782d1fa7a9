"""The string_transform family: reverse, capitalise, repeat, join, take first letters."""

from __future__ import annotations

import random

from pipeline_lib.suite.item import Draft
from pipeline_lib.suite.vocab import LONG_WORDS, SHORT_WORDS, WORDS, as_sentence, sentence_words

# Words whose first letter is not itself a word ("a", "i"), so a reply that
# merely starts with "A ..." cannot pass "what is the first letter" by chance.
_LETTER_WORDS = [word for word in WORDS if word[0] not in "ai"]


def text_draft(
    prompt: str, source: str, answer: str, case_sensitive: bool = False, ignore_spaces: bool = False
) -> Draft:
    """``source`` is the text the task transforms; echoing it earns no credit."""
    spec = {
        "check": "text",
        "answer": answer,
        "source": source,
        "case_sensitive": case_sensitive,
        "ignore_spaces": ignore_spaces,
    }
    return Draft(prompt, answer, spec)


def _reverse_word(word: str) -> Draft:
    prompt = f'Reverse the letters of the word "{word}". Answer with just the reversed word.'
    return text_draft(prompt, word, word[::-1])


def _uppercase_word(word: str) -> Draft:
    return text_draft(f'Convert "{word}" to uppercase. Answer with just the word.',
                      word, word.upper(), case_sensitive=True)


def _first_letter(word: str) -> Draft:
    prompt = f'What is the first letter of the word "{word}"? Answer with just the letter.'
    return text_draft(prompt, word, word[0])


def _repeat_three_times(word: str) -> Draft:
    prompt = f'Write the word "{word}" three times, separated by spaces. Answer with just the words.'
    return text_draft(prompt, word, " ".join([word] * 3))


def _join_dashes(words: list[str]) -> Draft:
    listed = ", ".join(words)
    prompt = f"Join these words with dashes: {listed}. Answer with just the joined words."
    return text_draft(prompt, listed, "-".join(words), ignore_spaces=True)


def _first_letters(words: list[str]) -> Draft:
    listed = ", ".join(words)
    prompt = (f"Write the first letter of each of these words: {listed}. "
              "Answer with just the letters, written together with no spaces.")
    return text_draft(prompt, listed, "".join(word[0] for word in words), ignore_spaces=True)


def _reverse_sentence(words: list[str]) -> Draft:
    sentence = " ".join(words)
    prompt = (f'Reverse the order of the words in this sentence: "{sentence}". '
              "Answer with just the new sentence.")
    return text_draft(prompt, sentence, " ".join(reversed(words)))


def _uppercase_sentence(words: list[str]) -> Draft:
    sentence = as_sentence(words)
    prompt = f'Rewrite this sentence in capital letters: "{sentence}" Answer with just the sentence.'
    return text_draft(prompt, sentence, sentence.upper(), case_sensitive=True)


def string_transform(rng: random.Random, difficulty: int) -> Draft:
    if difficulty == 1:
        # One task the 135M model usually solves (first letter) among harder ones.
        task, pool = rng.choice([
            (_first_letter, _LETTER_WORDS), (_repeat_three_times, WORDS), (_uppercase_word, WORDS),
            (_reverse_word, SHORT_WORDS),
        ])
        return task(rng.choice(pool))
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
