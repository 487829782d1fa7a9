"""Test-wide isolation: the whole session runs under its own ALIGNFLOW_HOME.

It is set when this file is imported, before any test module imports Prefect,
because Prefect reads its settings (derived from the home) once at import.

Under pytest-xdist (`make test`, `-n 2`) every worker imports this file
itself, so each worker has a home of its own, and with it its own Prefect home,
Prefect API and MLflow store; the controller's environment (which the workers
inherit) must therefore not carry any Prefect setting derived from a home.
"""

import json
import os
import signal
import threading
import shutil
import tempfile
from pathlib import Path

import pytest

WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ... under xdist; None otherwise

if WORKER:
    # Two workers on two cores: one thread each, or torch's OpenMP pools
    # oversubscribe the cores and every training step slows down severalfold.
    # Set before torch is imported; `alignflow run` subprocesses inherit it.
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[_name] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# As `alignflow` sets it (flows.cli), for the flows this session runs in-process; set before torch is imported.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

_HOME = Path(tempfile.mkdtemp(prefix=f"alignflow-test-home-{WORKER + '-' if WORKER else ''}"))
os.environ["ALIGNFLOW_HOME"] = str(_HOME)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests start their own ephemeral Prefect API and local MLflow store; a
# developer's exported servers must not receive test runs. Every other Prefect
# setting (PREFECT_HOME, storage paths) is derived from this session's home
# below: one inherited from a developer's shell or from the xdist controller
# would make the workers share a Prefect home.
for _name in [n for n in os.environ if n.startswith("PREFECT_") and n != "PREFECT_LOGGING_LEVEL"]:
    os.environ.pop(_name)
os.environ.pop("MLFLOW_TRACKING_URI", None)

# Before any test module imports Prefect, which reads its settings once.
from tasks.settings import configure_prefect  # noqa: E402

configure_prefect()
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

if WORKER:
    import torch  # noqa: E402

    torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


# Seconds per test from a measured run (bench/test_durations.py); a test not in it is guessed by its marks.
DURATIONS = json.loads((Path(__file__).with_name("durations.json")).read_text())
NEW_INTEGRATION_S, NEW_UNIT_S = 30.0, 0.5


def pytest_collection_modifyitems(config, items):
    """Costliest work first: each xdist group (its tests stay together) or lone test, by its expected
    seconds. With `--no-loadscope-reorder` (make test) workers take work in this order, so the run does
    not end with one worker running a long group alone while the others wait."""

    def scope(item) -> str:
        group = item.get_closest_marker("xdist_group")
        return f"group:{group.args[0]}" if group else item.nodeid

    def seconds(item) -> float:
        guess = NEW_INTEGRATION_S if item.get_closest_marker("integration") else NEW_UNIT_S
        return DURATIONS.get(item.nodeid.split("@")[0], guess)

    cost: dict[str, float] = {}
    for item in items:
        cost[scope(item)] = cost.get(scope(item), 0.0) + seconds(item)
    first_seen = {name: i for i, name in reversed(list(enumerate(scope(item) for item in items)))}
    items.sort(key=lambda item: (-cost[scope(item)], first_seen[scope(item)]))


def pytest_unconfigure(config):
    # The xdist controller imports this file too, making a home it never uses.
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def alignflow_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The shared tiny-llama: SmolLM2's tokenizer, random weights whose output depends on the context."""
    from pipeline_lib.models import resolve_model

    return resolve_model("tiny-llama")


@pytest.fixture(scope="session")
def hf_sampler(tiny_model: Path):
    """The tiny model in an HF sampler, batch 8, shared by a worker's sampling tests."""
    from pipeline_lib.sampling.hf import HFSampler

    with HFSampler(tiny_model, batch_size=8, progress=False) as sampler:
        yield sampler


@pytest.fixture(scope="session")
def tiny_vllm(tiny_model: Path):
    """One vLLM server (float32) for the tiny model, shared by the vLLM tests of a worker: they run in one
    xdist group, and each server start costs about 30 s. Stopped at the end of the session."""
    from pipeline_lib.sampling.vllm_client import VLLMSampler
    from pipeline_lib.sampling.vllm_server import ServerOptions

    with VLLMSampler(tiny_model, ServerOptions(), batch_size=8, progress=False) as sampler:
        yield sampler


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def _prefect_api_and_clean_home():
    """One private Prefect API for the worker's tests, then remove the session's home.

    It is exported (PREFECT_API_URL), so an `alignflow` process a test starts
    records its runs there, as a user's command does once `alignflow ui` runs
    and PREFECT_API_URL is exported: a private API of its own would cost each
    such process a server start (and, in a new home, Prefect's database
    migrations, about 9 CPU seconds). The tests of the private API's own life
    start their processes without it (``flow_runs.start_run``). The home holds
    a converted 538 MB model that must not pile up in /tmp.
    """
    from prefect.settings import PREFECT_API_URL

    from flows.local_api import local_prefect_api

    with local_prefect_api():
        os.environ["PREFECT_API_URL"] = PREFECT_API_URL.value()
        yield
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(autouse=True)
def _default_sigint_handler():
    """Every test starts with Python's own SIGINT handler.

    `alignflow` exiting on ctrl-C ignores further interrupts (flows.cli), which
    is right for a process about to exit, but ``main`` called in this process
    (by a test or a module's fixture) would leave every later test on its
    worker deaf to ctrl-C.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
