"""A digest of the suite's own code, part of the keys of stages that generate or grade items.

Items and scores are functions of this code as much as of the config: a
changed generator or verifier must not reuse items or scores made by the old
one, and nobody should have to remember to bump a number for that.
"""

import hashlib
from functools import cache
from pathlib import Path


@cache
def code_digest() -> str:
    sha = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        sha.update(source.name.encode() + b"\0" + source.read_bytes())
    return sha.hexdigest()
