"""Where the separate vLLM environment lives.

vLLM pins a fastapi that Prefect cannot use, so it will get its own
virtualenv (`.venv-vllm`, or ALIGNFLOW_VLLM_PYTHON) and always run as its
own process. `alignflow doctor` reports whether it is there.
"""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def vllm_python() -> Path | None:
    """The vLLM environment's interpreter, or None when it is not installed."""
    explicit = os.environ.get("ALIGNFLOW_VLLM_PYTHON")
    candidate = Path(explicit) if explicit else PROJECT_ROOT / ".venv-vllm" / "bin" / "python"
    return candidate if candidate.is_file() else None
