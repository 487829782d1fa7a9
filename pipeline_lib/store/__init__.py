"""alignflow's files on disk: atomic writes, content digests, key-addressed stage outputs and run folders.

``pipeline_lib.store.runs`` is imported by its own name: it reads the config,
which itself writes through this package.
"""

from pipeline_lib.store.digests import MANIFEST, digest_file, digest_path, read_manifest, source_digest
from pipeline_lib.store.files import atomic_write_parquet, atomic_write_text
from pipeline_lib.store.stages import (
    atomic_dir,
    build_stage,
    cache_key,
    content_matches,
    invalidate,
    is_complete,
    link,
    owning_stage_folder,
    stage_dir,
    stage_problem,
    write_manifest,
    writer_busy,
)

__all__ = [
    "MANIFEST",
    "atomic_dir",
    "atomic_write_parquet",
    "atomic_write_text",
    "build_stage",
    "cache_key",
    "content_matches",
    "digest_file",
    "digest_path",
    "invalidate",
    "is_complete",
    "link",
    "owning_stage_folder",
    "read_manifest",
    "source_digest",
    "stage_dir",
    "stage_problem",
    "write_manifest",
    "writer_busy",
]
