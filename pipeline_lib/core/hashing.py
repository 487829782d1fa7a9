"""The one way alignflow hashes a JSON-able value (config hashes, recipe identities)."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def hash_json(value: Any) -> str:
    # Sorted keys and no whitespace: equal values hash equal whatever their key order.
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
