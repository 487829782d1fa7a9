"""One process of a launched training run: ``accelerate launch -m pipeline_lib.training.worker CALL``.

``CALL`` is the JSON ``launch.Call`` wrote. Every process joins the group,
leaves a ``joined-<rank>`` marker (its PID) for the launcher's watchdog, and
runs the same ``train_model`` as in-process training; the Trainer splits the
batches and averages the gradients. Only the main process writes the model
(``runner.fine_tune``) and the outcome the launcher reads back.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from pipeline_lib.core.servers import die_with_parent
from pipeline_lib.store import atomic_write_text
from pipeline_lib.training.launch import Call, read_rows


def main(call_file: str) -> None:
    # torchrun starts each worker in a session of its own: tie it to its launcher, so that a launcher
    # killed outright (SIGKILL reaches no handler) leaves no worker behind.
    die_with_parent(os.getppid())()
    call = Call.read(Path(call_file))

    import torch  # loaded only once tied
    from accelerate import PartialState

    from pipeline_lib.training.objectives import train_model

    cpu = not torch.cuda.is_available()
    if cpu:
        # accelerate (and TrainingArguments, which reads this) forms a CPU group only when told to; gloo carries it.
        os.environ["ACCELERATE_USE_CPU"] = "true"
    state = PartialState(cpu=cpu, **({"backend": "gloo"} if cpu else {}))  # joins the process group (NCCL on GPUs)
    state.wait_for_everyone()
    atomic_write_text(call.joined_marker(state.process_index), str(os.getpid()))
    metrics = train_model(
        call.model, read_rows(call.rows), call.out_dir, call.config,
        seed=call.seed, dtype=call.dtype, work_dir=call.work_dir, progress=False,
    )  # fmt: skip
    if state.is_main_process:
        atomic_write_text(call.outcome, json.dumps(metrics))


if __name__ == "__main__":
    main(sys.argv[1])
