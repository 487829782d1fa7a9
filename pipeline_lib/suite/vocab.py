"""Word pools shared by the task families, and a small sentence maker.

Plain everyday words keep the tasks about the operation (sort, count,
reverse), not about vocabulary a 135M model may not know.
"""

from __future__ import annotations

import random

NAMES = [
    ("Maya", "she"), ("Tom", "he"), ("Lena", "she"), ("Omar", "he"), ("Sara", "she"),
    ("Ben", "he"), ("Priya", "she"), ("Leo", "he"), ("Ana", "she"), ("Sam", "he"),
]

# Plural countable things for word problems.
THINGS = [
    "apples", "pencils", "stickers", "marbles", "cookies", "books", "stamps",
    "shells", "cards", "balloons", "oranges", "candies",
]

SHORT_WORDS = [
    "cat", "dog", "sun", "map", "cup", "hat", "pen", "box", "fox", "bag", "bed", "jar", "key", "owl",
]

WORDS = [
    "apple", "anchor", "arrow", "basket", "banana", "bridge", "button", "candle", "castle",
    "carrot", "cookie", "dragon", "desert", "doctor", "garden", "guitar", "ginger", "ladder",
    "lemon", "lizard", "mirror", "monkey", "muffin", "pencil", "pepper", "planet", "rabbit",
    "rocket", "river", "silver", "spider", "sunset", "tiger", "turtle", "tomato", "window",
    "winter", "wagon", "forest", "bottle", "yellow", "orange", "pocket", "violin",
]

LONG_WORDS = [
    "elephant", "mountain", "computer", "sandwich", "umbrella", "dinosaur", "hospital",
    "keyboard", "notebook", "sunshine", "butterfly", "chocolate", "blueberry", "strawberry",
    "telephone", "kangaroo", "pineapple", "adventure", "basketball", "watermelon",
]

_ADJECTIVES = ["small", "happy", "old", "quiet", "bright", "lazy", "brave", "tiny", "busy", "young"]
_NOUNS = ["dog", "bird", "girl", "boy", "farmer", "teacher", "cat", "fox", "baker", "horse"]
_VERBS = ["ran", "jumped", "walked", "looked", "sat", "slept", "waited", "played", "sang"]
_ADVERBS = ["quickly", "slowly", "happily", "quietly", "again", "today"]
_PLACES = ["fence", "table", "river", "house", "tree", "bridge", "garden", "road", "window"]
_PREPOSITIONS = ["near", "under", "behind", "beside", "by", "past"]


def sentence_words(rng: random.Random, min_words: int, max_words: int) -> list[str]:
    """Lowercase words of a simple sentence whose length lies in [min_words, max_words] (3..9)."""
    while True:
        words = ["the"]
        if rng.random() < 0.6:
            words.append(rng.choice(_ADJECTIVES))
        words += [rng.choice(_NOUNS), rng.choice(_VERBS)]
        if rng.random() < 0.4:
            words.append(rng.choice(_ADVERBS))
        if rng.random() < 0.7:
            words += [rng.choice(_PREPOSITIONS), "the"]
            if rng.random() < 0.5:
                words.append(rng.choice(_ADJECTIVES))
            words.append(rng.choice(_PLACES))
        if min_words <= len(words) <= max_words:
            return words


def as_sentence(words: list[str]) -> str:
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."
