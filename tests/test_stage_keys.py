"""An unchanged recipe keeps its stage keys across releases, so a user's finished stages are reused.

``data/stage_keys_0.7.json`` holds every stage folder (stage, key, content
digest) that each recipe left in a fresh home on 0.7.0, before the stage
layer was rewritten. Running the same recipes now must give:
- the same key for every stage keyed by its version (generation, training):
  those are the hours of work a changed key would silently recompute;
- the same content for every stage, whatever its key. Stages keyed by their
  code's digest (cheap ones: the suite, scoring, row building) get new keys
  whenever their code moves, by design, and rebuild in seconds; stages whose
  version was bumped deliberately (CHANGELOG 0.8.0) are listed below.
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
RECORDED = json.loads((Path(__file__).with_name("data") / "stage_keys_0.7.json").read_text())
# Stages whose key changed on purpose in 0.8.0 (CHANGELOG): keyed by a version instead of their code's digest.
REKEYED_IN_0_8 = {"revise", "cel-learn", "cel-evaluate"}
# Stages that did not exist in 0.7: seft-tiny's HH-RLHF pairs moved from reviser.preference to data.preference
# (the same rows), which the prepare-data stage now prepares before the reviser's data are built from them.
ADDED_SINCE = {"prepare-data"}

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
    # costs them CPU and changes no number.
    return {**env, "ALIGNFLOW_HOME": str(home), "OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}


def _stages_now(home: Path) -> list[dict]:
    found = []
    for folder in sorted((home / "stages").glob("*/*")):
        if folder.is_dir() and not folder.name.startswith(".") and "." not in folder.name:
            manifest = json.loads((folder / "manifest.json").read_text())
            found.append({"stage": folder.parent.name, "key": folder.name, "digest": manifest["digest"]})
    return found


def _keyed_by_version(stage: str) -> bool:
    return stage not in REKEYED_IN_0_8 and not any(declared.code for declared in DECLARED[stage])


@pytest.mark.parametrize("recipe", ["seft-tiny", "spin-tiny", "cel-frozenlake-tiny"])
def test_an_unchanged_recipe_keeps_its_keys_and_outputs(recipe, tmp_path):
    for method in {"seft", "spin", "cel"}:
        METHODS[method].load_flow()  # declares the method's stages
    home = tmp_path / "home"
    env = _user_env(home)
    command = [str(Path(sys.executable).with_name("alignflow")), "run", f"configs/{recipe}.yaml"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    before, now = RECORDED[recipe], [s for s in _stages_now(home) if s["stage"] not in ADDED_SINCE]
    assert Counter(s["stage"] for s in now) == Counter(s["stage"] for s in before), "the same stages ran"
    keys_now = {(s["stage"], s["key"]): s["digest"] for s in now}
    for old in before:
        if _keyed_by_version(old["stage"]):
            assert keys_now.get((old["stage"], old["key"])) == old["digest"], f"{old['stage']} {old['key']} was not reused"
        else:
            digests = {s["digest"] for s in now if s["stage"] == old["stage"]}
            assert old["digest"] in digests, f"{old['stage']} now writes different content"
