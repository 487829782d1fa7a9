"""Where the separate vLLM environment lives.

vLLM pins a fastapi that Prefect cannot use, so it will get its own
virtualenv (`.venv-vllm`, or ALIGNFLOW_VLLM_PYTHON) and always run as its
own process. `alignflow doctor` reports whether it is there.
"""

import os
from pathlib import Path

from pipeline_lib.core.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def vllm_python() -> Path | None:
    """The vLLM environment's interpreter, or None when it is not installed."""
    candidate = _expected_python()
    return candidate if candidate.is_file() else None


def require_vllm_python(why: str) -> Path:
    """The vLLM environment's interpreter; a UserError naming the path checked when ``why`` needs it and it is missing."""
    python = vllm_python()
    if python is None:
        raise UserError(
            f"{why} needs the vLLM environment, but there is no interpreter at {_expected_python()}: "
            "run `make setup-vllm`, or point ALIGNFLOW_VLLM_PYTHON at one"
        )
    return python


def _expected_python() -> Path:
    explicit = os.environ.get("ALIGNFLOW_VLLM_PYTHON")
    return Path(explicit) if explicit else PROJECT_ROOT / ".venv-vllm" / "bin" / "python"
