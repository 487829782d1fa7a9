"""Dataset loading and normalisation: any source in, validated rows of one schema out.

``load_rows`` is the entry point; ``schemas`` documents the row layouts and
``formats`` the known dataset layouts (HH-RLHF, MT-Bench). Names load on first
use: a recipe's data sections (``data.config``) must not load ``datasets``.
"""

from pipeline_lib.core.lazy import lazy_attributes

_WHERE = {
    "FORMATS": "formats",
    **dict.fromkeys(("LoadResult", "SkippedRow", "content_hash", "load_rows"), "loaders"),
    **dict.fromkeys(("ROLES", "SCHEMAS", "features_for"), "schemas"),
}
__all__ = sorted(_WHERE)
__getattr__ = lazy_attributes(__name__, _WHERE)
