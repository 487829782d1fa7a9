"""Training through `accelerate launch` (train.launcher / train.distributed) on the tiny model, on CPU (gloo).

The loss curve of 2 DDP processes matches one process at the same global
batch within ``LOSS_TOLERANCE``; the stage's manifest says where it ran; and
every fault (too many processes, a process that never joins, a crashed
worker, a killed launcher or parent) ends in one line with no process left.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from methods.recipe import load_recipe
from pipeline_lib.core.errors import UserError
from pipeline_lib.store import read_manifest
from pipeline_lib.training.config import TrainConfig
from pipeline_lib.training.distributed import ACCELERATE_CONFIGS, STRATEGIES
from pipeline_lib.training.launch import Call, launch, train
from pipeline_lib.training.rows import write_rows
from processes import command_line

# Answers of different lengths, so that each process pads its half of a batch differently.
ROWS = [
    {"prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}],
     "completion": [{"role": "assistant", "content": f"The answer is {2 * i}." + " Indeed." * (i % 3)}]}
    for i in range(16)
]  # fmt: skip
# 16 rows, global batch 8, 4 epochs: 8 steps, each process 4 rows a step. (At batch 8 transformers'
# length grouping draws groups of another size for per-process batches of 4: see batch_arguments.)
SMALL = TrainConfig(lr=3e-2, epochs=4, batch_size=8, max_length=64)


def launched(config: TrainConfig = SMALL, **settings) -> TrainConfig:
    """``config`` through the launcher, validated (``model_copy`` would not check the settings)."""
    return TrainConfig.model_validate({**config.model_dump(), "launcher": "accelerate", **settings})


DDP2 = launched(distributed={"num_processes": 2})
# Two processes split the global batches one process draws (batch_arguments) and average their
# gradients, so in exact arithmetic the runs are equal. In floats they are not: each process pads its
# part of a batch to its own longest row (other matrix shapes, other summation order), and the parts'
# gradients are averaged by an all-reduce instead of one mean. Measured here (2 CPU processes, float32):
# losses at most 9.5e-7 apart over 8 steps at lr 3e-2 (11.65 -> 5.54), weights at most 9e-7; the
# tolerance leaves a 100x margin for other CPUs' kernels and thread counts.
LOSS_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rows") / "rows.parquet"
    write_rows(ROWS, path)
    return path


def _train(tiny_model: Path, rows_file: Path, where: Path, config: TrainConfig) -> dict:
    (where / "model").mkdir(parents=True)  # an empty folder is filled in place, as a stage's is
    return train(tiny_model, rows_file, where / "model", config, seed=0, dtype="float32", work_dir=where / "work")


def _survivors(marker: str, pids: tuple[int, ...]) -> list[psutil.Process]:
    """Live processes, other than this test's, whose command line names ``marker`` (a launch's unique
    folder) or whose PID is one of ``pids``; a process that is exiting may already show no command line."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "status"]):
        if process.pid == os.getpid() or process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if process.pid in pids or any(marker in part for part in process.info["cmdline"] or ()):
            found.append(process)
    return found


def assert_no_survivors(marker: str | Path, pids: tuple[int, ...] = (), within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while (left := _survivors(str(marker), pids)) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not left, f"left running: {[(p.pid, (p.info['cmdline'] or [])[:4]) for p in left]}"


def wait_joined(launch_dir: Path, ranks: int, within: float = 120.0) -> list[int]:
    """The PIDs of the workers once all ``ranks`` have joined the group."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        markers = [launch_dir / f"joined-{rank}" for rank in range(ranks)]
        if all(m.is_file() and m.read_text() for m in markers):
            return [int(m.read_text()) for m in markers]
        time.sleep(0.2)
    raise AssertionError(f"the workers did not join within {within} s")


# --- the recipe: keys, validation ------------------------------------------------------------------


def test_unset_launcher_keeps_dumps_and_keys() -> None:
    # Recipes, reviser phases and stage keys written before these settings existed hash as before.
    plain = TrainConfig()
    assert "launcher" not in plain.model_dump() and "distributed" not in plain.model_dump()
    assert plain.keyed() == plain.model_dump(mode="json")
    assert TrainConfig(launcher="inprocess") == plain  # the default, spelled out
    # Where the processes run does not key the weights; how many, and how, does.
    keyed = DDP2.keyed()
    assert keyed["distributed"] == {"world_size": 2, "strategy": "ddp"}
    elsewhere = {"num_processes": 1, "num_machines": 2, "main_process_ip": "10.0.0.1", "join_timeout_s": 5}
    assert launched(distributed=elsewhere).keyed() == keyed


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["train.distributed.num_processes=3"], "batch_size 8 is the global batch and does not divide among 3 processes"),
        (["train.launcher=inprocess", "train.distributed.num_processes=2"], "launcher is not 'accelerate'"),
        (["train.distributed.num_machines=2"], "num_machines > 1 needs main_process_ip"),
        (["train.distributed.num_machines=2", "train.distributed.main_process_ip=10.0.0.1", "train.distributed.machine_rank=1"],
         "a recipe runs on machine 0; each other machine joins with the command it prints"),
        (["train.distributed.config_file=configs/accelerate/fsdp.yaml"], "distributed_type 'FSDP'; strategy ddp needs 'MULTI_GPU'"),
        (["train.distributed.config_file=nowhere.yaml"], "accelerate config file not found"),
        (["train.distributed.strategy=fsdp", "train.mode=lora"], "strategy fsdp shards it: use ddp"),
    ],
)
def test_recipe_refuses_a_launch_that_cannot_work(overrides: list[str], expected: str) -> None:
    with pytest.raises(UserError, match=expected) as caught:
        load_recipe("configs/sft-tiny.yaml", ["train.launcher=accelerate", *overrides])
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_shipped_accelerate_configs_validate(strategy: str) -> None:
    recipe = load_recipe("configs/sft-tiny.yaml", ["train.launcher=accelerate", f"train.distributed.strategy={strategy}"])
    assert recipe.train.launched.accelerate_config() == ACCELERATE_CONFIGS / f"{strategy}.yaml"


@pytest.mark.parametrize(
    ("distributed", "expected"),
    [
        ({"num_processes": len(os.sched_getaffinity(0)) + 1}, r"train.distributed.num_processes \d+ is more than the \d+ (CPU cores|GPUs) on this machine"),
        ({"strategy": "deepspeed-zero2"}, "needs DeepSpeed, which is not installed"),
        # accelerate 1.15 runs FSDP's config on CPUs as plain DDP: refused rather than silently unsharded.
        ({"strategy": "fsdp"}, "strategy fsdp needs GPUs; on CPUs use ddp"),
        ({"num_machines": 2, "main_process_ip": "no-such-host.invalid"}, "main_process_ip 'no-such-host.invalid' does not resolve"),
    ],
)
def test_launch_refuses_before_starting_anything(tiny_model: Path, rows_file: Path, tmp_path: Path, distributed, expected) -> None:
    strategy = distributed.get("strategy", "")
    if strategy.startswith("deepspeed") and importlib.util.find_spec("deepspeed"):
        pytest.skip("DeepSpeed is installed here")
    if strategy == "fsdp" and torch.cuda.is_available():
        pytest.skip("GPUs here: FSDP runs")
    world = distributed.get("num_processes", 1) * distributed.get("num_machines", 1)
    config = launched(batch_size=4 * world, distributed=distributed)
    with pytest.raises(UserError, match=expected):
        _train(tiny_model, rows_file, tmp_path, config)
    assert not (tmp_path / "work" / "launch" / "machine-0.log").exists(), "nothing was launched"


# --- training in two processes -----------------------------------------------------------------------


@pytest.mark.integration
def test_two_ddp_processes_match_one_at_the_same_global_batch(tiny_model: Path, rows_file: Path, tmp_path: Path) -> None:
    alone = _train(tiny_model, rows_file, tmp_path / "one", SMALL)
    together = _train(tiny_model, rows_file, tmp_path / "two", DDP2)

    assert together["steps"] == alone["steps"] == 8
    assert together["trained_tokens"] == alone["trained_tokens"]  # every row seen once per epoch, in all
    losses = [(a["loss"], b["loss"]) for a, b in zip(alone["loss_history"], together["loss_history"], strict=True)]
    worst = max(abs(a - b) for a, b in losses)
    print(f"max |loss difference| over {len(losses)} steps: {worst:.3g}")
    assert worst < LOSS_TOLERANCE
    assert losses[-1][1] < losses[0][1] / 1.5  # it learned

    # One model was written, by the main process, and it is the same model.
    one, two = (load_file(tmp_path / run / "model" / "model.safetensors") for run in ("one", "two"))
    assert one.keys() == two.keys()
    weights = max((one[name] - two[name]).abs().max().item() for name in one)
    print(f"max |weight difference|: {weights:.3g}")
    assert weights < 1e-3
    assert_no_survivors(tmp_path / "two")


@pytest.mark.integration
def test_the_stage_records_the_launch_in_its_manifest(tiny_model: Path, rows_file: Path, tmp_path: Path) -> None:
    from tasks.training import train_policy

    out = train_policy.run(tmp_path / "round-1" / "train-policy", model=str(tiny_model), rows=str(rows_file),
                           train=DDP2, seed=0, dtype="float32")  # fmt: skip
    manifest = read_manifest(Path(out))
    assert manifest["train"]["launcher"] == "accelerate"
    assert manifest["train"]["world_size"] == 2 and manifest["train"]["strategy"] == "ddp"
    assert (Path(out) / "model.safetensors").is_file()
    # The same training in process is another stage (its sums differ), keyed as before this option.
    assert train_policy.key({"model": str(tiny_model), "rows": str(rows_file), "train": SMALL, "seed": 0, "dtype": "float32"}) != manifest["key"]


@pytest.mark.integration
def test_a_second_machine_joins_with_the_printed_command(tiny_model: Path, rows_file: Path, tmp_path: Path) -> None:
    """Two "machines" of one process each on this host: machine 0 trains as the stage would, machine 1
    joins with ``python -m pipeline_lib.training.launch CALL --machine-rank 1``; the run is the 2-process one."""
    from pipeline_lib.core.servers import free_port

    distributed = {"num_processes": 1, "num_machines": 2, "main_process_ip": "127.0.0.1", "main_process_port": free_port()}
    outcome: list[dict] = []
    machine_0 = threading.Thread(target=lambda: outcome.append(_train(tiny_model, rows_file, tmp_path, launched(distributed=distributed))))
    machine_0.start()
    call = tmp_path / "work" / "launch" / "call.json"
    deadline = time.monotonic() + 60
    while not call.is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    joined = subprocess.run([sys.executable, "-m", "pipeline_lib.training.launch", str(call), "--machine-rank", "1"],
                            cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)  # fmt: skip
    machine_0.join(timeout=120)
    assert joined.returncode == 0, joined.stderr[-2000:]
    assert outcome and outcome[0]["steps"] == 8 and outcome[0]["trained_tokens"] > 0
    assert (tmp_path / "work" / "launch" / "machine-1.log").is_file() and (tmp_path / "model" / "model.safetensors").is_file()
    assert_no_survivors(tmp_path)


@pytest.mark.integration
def test_alignflow_run_trains_in_two_processes(capsys: pytest.CaptureFixture) -> None:
    """The issue's check: `alignflow run configs/sft-tiny.yaml train.launcher=accelerate train.distributed.num_processes=2`."""
    from flow_runs import run_recipe

    out, states = run_recipe(capsys, "configs/sft-tiny.yaml", "train.launcher=accelerate", "train.distributed.num_processes=2")
    assert states["train-policy"] == ["Completed"]
    run_dir = Path(next(line.split()[-1] for line in out.splitlines() if line.startswith("run folder:")))
    trained = read_manifest(run_dir / "round-1" / "train-policy")["train"]
    assert (trained["launcher"], trained["world_size"], trained["strategy"]) == ("accelerate", 2, "ddp")


# --- faults: one line, no process left ---------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("machine_rank", [0, 1], ids=["nobody-joins-machine-0", "machine-0-unreachable"])
def test_a_group_that_never_forms_is_stopped_after_join_timeout(
    tiny_model: Path, rows_file: Path, tmp_path: Path, machine_rank: int
) -> None:
    from pipeline_lib.core.servers import free_port

    # Two machines of one process each; this one is the only one there (machine 0 waits for 1, or
    # machine 1 dials a port where nothing listens).
    distributed = {"num_processes": 1, "num_machines": 2, "main_process_ip": "127.0.0.1",
                   "main_process_port": free_port(), "join_timeout_s": 8}  # fmt: skip
    config = launched(distributed=distributed)
    started = time.monotonic()
    with pytest.raises(UserError, match=r"had not joined the group of 2 after join_timeout_s 8 s; were the other machines") as caught:
        if machine_rank == 0:
            _train(tiny_model, rows_file, tmp_path, config)
        else:
            call = Call(str(tiny_model), str(rows_file), str(tmp_path / "model"), config, 0, "float32", str(tmp_path / "work"))
            call.write()
            launch(call, config.launched.model_copy(update={"machine_rank": 1}))
    assert "\n" not in str(caught.value)
    assert time.monotonic() - started < 8 + 30  # stopped by the watchdog, not torch's own 15-minute timeout
    assert_no_survivors(tmp_path)


@pytest.mark.integration
def test_a_crashed_worker_is_one_line_quoting_its_log(rows_file: Path, tmp_path: Path) -> None:
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    with pytest.raises(UserError, match=r"training in 2 processes failed \(exit 1\): .*Error.*; log: ") as caught:
        _train(not_a_model, rows_file, tmp_path / "run", DDP2)
    assert "\n" not in str(caught.value)
    assert_no_survivors(tmp_path / "run")


@pytest.mark.integration
def test_killing_the_launcher_group_leaves_no_worker(tiny_model: Path, rows_file: Path, tmp_path: Path) -> None:
    slow = launched(DDP2, epochs=50.0)  # long enough to be killed mid-training
    failure: list[BaseException] = []

    def run() -> None:
        try:
            _train(tiny_model, rows_file, tmp_path, slow)
        except BaseException as error:  # noqa: BLE001 - handed to the test's thread
            failure.append(error)

    trainer = threading.Thread(target=run)
    trainer.start()
    workers = wait_joined(tmp_path / "work" / "launch", ranks=2)
    launcher = next(p for p in psutil.Process().children() if "accelerate.commands.launch" in command_line(p))
    os.killpg(launcher.pid, signal.SIGKILL)  # the launcher's group: torchrun's workers are in sessions of their own
    trainer.join(timeout=60)
    assert isinstance(failure[0], UserError) and "exit -9" in str(failure[0])
    assert_no_survivors(tmp_path, tuple(workers))


PARENT = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started from a shell that ignores it
from pathlib import Path
from pipeline_lib.training.config import TrainConfig
from pipeline_lib.training.launch import train
config = TrainConfig.model_validate_json(sys.argv[4])
train(sys.argv[1], sys.argv[2], Path(sys.argv[3]) / "model", config, seed=0, dtype="float32", work_dir=Path(sys.argv[3]) / "work")
"""


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_a_killed_parent_leaves_no_launcher_or_worker(tiny_model: Path, rows_file: Path, tmp_path: Path, sig: int) -> None:
    (tmp_path / "model").mkdir()
    slow = launched(DDP2, epochs=50.0)
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tiny_model), str(rows_file), str(tmp_path), slow.model_dump_json()],
        cwd=Path(__file__).resolve().parents[1], stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        workers = wait_joined(tmp_path / "work" / "launch", ranks=2)
        parent.send_signal(sig)
        parent.wait(timeout=60)
    finally:
        parent.kill()
    assert parent.returncode != 0
    assert_no_survivors(tmp_path, tuple(workers))
    assert not list((tmp_path / "model").iterdir()), "no model was written"
