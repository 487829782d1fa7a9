"""An unchanged recipe keeps its stage keys across releases, so a user's finished stages are reused.

``data/stage_keys_0.9.json`` holds every stage folder (stage, key, content
digest) that each recipe left in a fresh home on 0.9.0. Running the same
recipes now must give:
- the same key and content for every stage keyed by its version
  (generation, training): those are the hours of work a changed key would
  silently recompute;
- the same content for every stage, whatever its key. Stages keyed by their
  code's digest (cheap ones: the suite, scoring, row building) get new keys
  whenever their code moves, by design, and rebuild in seconds.

The record was 0.7.0's until 0.9.0, which kept every key but changed the
float rounding of training (logits only on the response spans, CHANGELOG):
a model trained anew differs from 0.7.0's in its last bits, and with it the
keys of the stages after it. A user's finished stages are still reused, as
their keys did not change.
"""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from methods import METHODS
from tasks.stage import DECLARED

REPO = Path(__file__).resolve().parents[1]
RECORDED = json.loads((Path(__file__).with_name("data") / "stage_keys_0.9.json").read_text())

pytestmark = [pytest.mark.integration, pytest.mark.slow]


# The session's settings, which the recorded runs (a user's shell) did not have: its Prefect and MLflow
# stores, and the offline switches, which reach the converted model's tokenizer_config.json
# ("local_files_only") and with it the model's digest and every key after it.
# The thread settings of a pytest-xdist worker (conftest) change float sums in training, so they go too.
SESSION_ONLY = (
    "MLFLOW_TRACKING_URI", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TOKENIZERS_PARALLELISM",
)  # fmt: skip


def _user_env(home: Path) -> dict[str, str]:
    """A user's environment with this home, and the thread count the recorded runs had: float sums in
    training depend on it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k not in SESSION_ONLY}
    # Passive: two threads on cores the other test workers share would otherwise spin for work, which
    # costs them CPU and changes no number. The session's Prefect API records the run and keys nothing.
    return {**env, "ALIGNFLOW_HOME": str(home), "OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE",
            "PREFECT_API_URL": os.environ["PREFECT_API_URL"]}  # fmt: skip


def _stages_now(home: Path) -> list[dict]:
    found = []
    for folder in sorted((home / "stages").glob("*/*")):
        if folder.is_dir() and not folder.name.startswith(".") and "." not in folder.name:
            manifest = json.loads((folder / "manifest.json").read_text())
            found.append({"stage": folder.parent.name, "key": folder.name, "digest": manifest["digest"]})
    return found


def _keyed_by_version(stage: str) -> bool:
    return not any(declared.code for declared in DECLARED[stage])


@pytest.mark.parametrize("recipe", ["seft-tiny", "spin-tiny", "cel-frozenlake-tiny"])
def test_an_unchanged_recipe_keeps_its_keys_and_outputs(recipe, tmp_path):
    for method in {"seft", "spin", "cel"}:
        METHODS[method].load_flow()  # declares the method's stages
    home = tmp_path / "home"
    env = _user_env(home)
    command = [str(Path(sys.executable).with_name("alignflow")), "run", f"configs/{recipe}.yaml"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    before, now = RECORDED[recipe], _stages_now(home)
    assert Counter(s["stage"] for s in now) == Counter(s["stage"] for s in before), "the same stages ran"
    keys_now = {(s["stage"], s["key"]): s["digest"] for s in now}
    for old in before:
        if _keyed_by_version(old["stage"]):
            assert keys_now.get((old["stage"], old["key"])) == old["digest"], f"{old['stage']} {old['key']} was not reused"
        else:
            digests = {s["digest"] for s in now if s["stage"] == old["stage"]}
            assert old["digest"] in digests, f"{old['stage']} now writes different content"
