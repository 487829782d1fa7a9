"""Dataset loading and normalisation: any source in, validated rows of one schema out.

``load_rows`` is the entry point; ``schemas`` documents the row layouts and
``formats`` the known dataset layouts (HH-RLHF, MT-Bench).
"""

from pipeline_lib.data.formats import FORMATS
from pipeline_lib.data.loaders import LoadResult, SkippedRow, content_hash, load_rows
from pipeline_lib.data.schemas import ROLES, SCHEMAS, features_for

__all__ = ["FORMATS", "ROLES", "SCHEMAS", "LoadResult", "SkippedRow", "content_hash", "features_for", "load_rows"]
