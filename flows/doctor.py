"""`alignflow doctor`: is this installation able to run a pipeline?

Each check returns a status and one line of detail; a broken *required* check
makes the command exit non-zero so scripts and CI can rely on it.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass
class Check:
    name: str
    required: bool
    run: Callable[[], tuple[str, str]]


def _torch() -> tuple[str, str]:
    import torch

    value = (torch.ones(2) * 2).sum().item()
    if value != 4.0:
        return FAIL, f"torch {torch.__version__} computes wrongly"
    device = f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)" if torch.cuda.is_available() else "CPU only"
    return OK, f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads"


def _home() -> tuple[str, str]:
    from pipeline_lib.core.home import alignflow_home

    home = alignflow_home()
    probe = home / ".doctor-probe"
    probe.write_text("ok")
    probe.unlink()
    free_gb = shutil.disk_usage(home).free / 2**30
    status = OK if free_gb > 5 else WARN
    return status, f"{home} (writable, {free_gb:.0f} GiB free)"


def _models() -> tuple[str, str]:
    from pipeline_lib.models import ALIASES, smollm2_gguf
    from pipeline_lib.core.home import models_dir
    from pipeline_lib.models.cache import alias_folder, is_built

    gguf = smollm2_gguf()  # raises with the install hint when the package is missing
    cached = [name for name, entry in ALIASES.items() if is_built(alias_folder(name), name, entry.recipe)]
    summary = ", ".join(cached) if cached else "nothing converted yet (first use converts SmolLM2)"
    return OK, f"{models_dir()}: {summary}; SmolLM2 GGUF at {gguf}"


def _prefect() -> tuple[str, str]:
    import anyio
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    from flows.local_api import local_prefect_api

    async def health():
        async with get_client() as client:
            return await client.api_healthcheck()

    started = time.perf_counter()
    with local_prefect_api() as private:
        where = "private local API" if private else PREFECT_API_URL.value()
        error = anyio.run(health)
    if error is not None:
        return FAIL, f"{where}: {error}"
    return OK, f"{where} healthy in {time.perf_counter() - started:.1f} s"


def _mlflow() -> tuple[str, str]:
    from mlflow.tracking import MlflowClient

    from pipeline_lib.tracking import default_tracking_uri

    uri = default_tracking_uri()
    experiments = MlflowClient(tracking_uri=uri).search_experiments(max_results=5)
    return OK, f"{uri} ({len(experiments)} experiment(s))"


def _vllm() -> tuple[str, str]:
    from pipeline_lib.sampling.environment import vllm_python

    python = vllm_python()
    if python is None:
        return WARN, "not installed (optional: sampling uses HF transformers)"
    result = subprocess.run(
        [str(python), "-c", "import vllm; print(vllm.__version__)"], capture_output=True, text=True, timeout=180
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
        return FAIL, f"{python}: import vllm failed: {last}"
    return OK, f"vllm {result.stdout.strip()} at {python}"


DOCTOR_CHECKS = [
    Check("torch", True, _torch),
    Check("alignflow home", True, _home),
    Check("model cache", True, _models),
    Check("prefect api", True, _prefect),
    Check("mlflow store", True, _mlflow),
    Check("vllm environment", False, _vllm),
]


def doctor() -> int:
    rows = []
    broken = False
    for check in DOCTOR_CHECKS:
        try:
            status, detail = check.run()
        except Exception as err:  # a check that crashes is a failed check, not a crashed doctor
            status, detail = FAIL, f"{type(err).__name__}: {err}"
        if status == FAIL and not check.required:
            status = WARN
        broken |= status == FAIL
        rows.append((check.name, status, detail))
    width = max(len(name) for name, _, _ in rows)
    for name, status, detail in rows:
        print(f"{name:<{width}}  {status:<4}  {detail}")
    print("doctor: " + ("something required is broken" if broken else "all required checks passed"))
    return 1 if broken else 0
