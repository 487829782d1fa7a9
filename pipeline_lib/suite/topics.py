"""Topics for the format family: short lowercase facts and words to forbid.

No fact contains any of its topic's ``avoid`` words, so a reference built from
facts always obeys "do not use the word W" (a test holds this invariant).
"""

from __future__ import annotations

from typing import NamedTuple


class Topic(NamedTuple):
    name: str
    facts: tuple[str, ...]
    avoid: tuple[str, ...]


TOPICS = [
    Topic("cats", (
        "they sleep for many hours every day.",
        "most of them love to chase small toys.",
        "their whiskers help them sense the space around them.",
        "they clean their fur with rough tongues.",
        "a happy one often purrs softly.",
    ), ("cat", "cute", "dog", "pet")),
    Topic("the ocean", (
        "it covers most of the surface of the earth.",
        "whales and sharks swim in its deep water.",
        "its water tastes salty because of dissolved minerals.",
        "waves are pushed along by the wind.",
        "many tiny plants in it make oxygen.",
    ), ("ocean", "blue", "sea", "fish")),
    Topic("coffee", (
        "it is brewed from roasted beans.",
        "many people drink it in the morning.",
        "it contains caffeine, which keeps people awake.",
        "some like it with milk and sugar.",
        "the plants grow well on warm hills.",
    ), ("coffee", "cup", "hot", "tea")),
    Topic("trains", (
        "they run on long steel rails.",
        "a single engine can pull many heavy wagons.",
        "many people ride them to work each day.",
        "fast ones can travel between cities in hours.",
        "stations let passengers get on and off.",
    ), ("train", "track", "ticket", "car")),
    Topic("gardens", (
        "they need sunlight, water and good soil.",
        "bees visit the flowers to collect nectar.",
        "weeds must be pulled out often.",
        "many people grow tomatoes and herbs in them.",
        "a quiet one can be a calm place to rest.",
    ), ("garden", "green", "plant", "tree")),
    Topic("the moon", (
        "it circles the earth about once a month.",
        "its light is reflected from the sun.",
        "astronauts first walked on it in 1969.",
        "its pull on the water causes the tides.",
        "the same side always faces the earth.",
    ), ("moon", "night", "star", "space")),
    Topic("bicycles", (
        "they have two wheels and a frame.",
        "riding one is good exercise for the legs.",
        "a chain moves power from the pedals to the wheel.",
        "many cities build special lanes for them.",
        "they do not burn any fuel.",
    ), ("bike", "bicycle", "fast", "road")),
    Topic("rain", (
        "it falls when water drops in clouds grow heavy.",
        "farmers need it to grow their crops.",
        "it fills rivers, lakes and wells.",
        "after it stops, a rainbow sometimes appears.",
        "people carry umbrellas to stay dry.",
    ), ("rain", "wet", "cloud", "storm")),
    Topic("books", (
        "they can take readers to distant places.",
        "libraries lend them for free.",
        "a good story can make people laugh or cry.",
        "many can now be downloaded to a phone.",
        "reading every day builds a strong vocabulary.",
    ), ("book", "read", "page", "author")),
    Topic("music", (
        "it can change the mood of a room.",
        "people have made it for thousands of years.",
        "drums, flutes and guitars are common instruments.",
        "many people listen to it while they work.",
        "a catchy tune is easy to remember.",
    ), ("music", "song", "sing", "sound")),
]

JSON_KEYS = ["summary", "fact", "description", "note"]

# Words too plain to make "include the word W" a real instruction.
_PLAIN = {"about", "their", "there", "which", "every", "people", "because", "around", "always", "often"}


def notable_words(topic: Topic) -> list[str]:
    """Words of the topic's facts worth asking for, in a stable order."""
    words = {word.strip(".,") for fact in topic.facts for word in fact.split()}
    return sorted(word for word in words if len(word) >= 5 and word.isalpha() and word not in _PLAIN)
