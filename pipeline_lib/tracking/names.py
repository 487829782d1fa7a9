"""Names MLflow accepts for metrics, params and tags."""

import hashlib
import re
import unicodedata

from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH

# Stricter than MLflow (which also takes ':' and non-ASCII letters): the UI,
# Windows stores and downstream tools all agree on this set.
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_\-./ ]")
_HASH_CHARS = 8


def sanitize_metric_name(name: str) -> str:
    """A name MLflow accepts as a metric, param or tag key, close to ``name``.

    Accents are dropped; other characters outside ASCII letters, digits and
    ``_-./ `` become ``_``. MLflow also treats names as file paths and rejects
    any that a path normalisation would change, so empty, ``.`` and ``..``
    segments are removed or replaced. Names
    over MLflow's key length keep their start and get a hash of the full name,
    so two long names stay distinct. Never empty.
    """
    # "é" -> "e" rather than "_", so accented names stay readable.
    decomposed = unicodedata.normalize("NFKD", str(name))
    cleaned = _NOT_ALLOWED.sub("_", "".join(c for c in decomposed if not unicodedata.combining(c)))
    segments = ["__" if part == ".." else part for part in cleaned.split("/") if part not in ("", ".")]
    cleaned = "/".join(segments) or "_"
    if cleaned.startswith(".."):
        cleaned = "_" + cleaned[1:]
    if len(cleaned) > MAX_ENTITY_KEY_LENGTH:
        digest = hashlib.sha256(str(name).encode()).hexdigest()[:_HASH_CHARS]
        cleaned = f"{cleaned[: MAX_ENTITY_KEY_LENGTH - _HASH_CHARS - 1]}-{digest}"
    return cleaned
