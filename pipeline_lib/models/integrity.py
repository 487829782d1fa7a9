"""Whether a model folder's files are whole, told without loading a tensor.

A cut-off download or copy otherwise surfaces deep inside transformers as an
error that names no file. Checking costs a JSON parse per small file and one
header read per safetensors file, so it can run before every flow.
"""

from __future__ import annotations

import json
from pathlib import Path

# A header larger than this is garbage, not a tensor index (safetensors itself refuses over 100 MB).
_MAX_HEADER_BYTES = 100_000_000


def damaged_file(folder: Path) -> str | None:
    """What is wrong with the first damaged JSON or safetensors file in ``folder``, or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    for path in sorted(folder.glob("*.json")):
        if (reason := _json_problem(path)) is not None:
            return f"{path} is damaged or truncated: not valid JSON ({reason})"
    for path in sorted(folder.glob("*.safetensors")):
        if (reason := safetensors_problem(path)) is not None:
            return f"{path} is damaged or truncated: {reason}"
    return None


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete safetensors file, or None.

    The format is an 8-byte little-endian header length, a JSON header giving
    each tensor's byte range, then the data, which ends where the last range does.
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            return f"{size} bytes, shorter than the 8-byte header length"
        header_length = int.from_bytes(prefix, "little")
        if header_length > min(_MAX_HEADER_BYTES, size - 8):
            return f"its header claims {header_length} bytes but the file has {size}"
        data_end = _data_end(handle.read(header_length))
    if data_end is None:
        return "its header is not a valid safetensors header"
    expected = 8 + header_length + data_end
    return None if size == expected else f"{size} bytes where its header describes {expected}"


def _data_end(header: bytes) -> int | None:
    """Where the last tensor's bytes end, counted from the end of the header; None for a malformed header."""
    try:
        ranges = [entry["data_offsets"] for name, entry in json.loads(header).items() if name != "__metadata__"]
        ends = [end for _, end in ranges]
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return max(ends, default=0) if all(isinstance(end, int) for end in ends) else None


def _json_problem(path: Path) -> str | None:
    try:
        json.loads(path.read_bytes())
    except ValueError as error:  # UnicodeDecodeError included
        return str(error)
    return None
