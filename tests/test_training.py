"""SFT with TRL on the tiny random Llama: loss, saved folders, LoRA merge, label masks, determinism, truncation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer

from pipeline_lib.core.errors import UserError
from pipeline_lib.core.progress import stage_display
from pipeline_lib.models import count_parameters, load_causal_lm, load_tokenizer
from pipeline_lib.sampling import render_chat
from pipeline_lib.training.objectives import train_sft
from pipeline_lib.training.config import LoraConfig, TrainConfig
from pipeline_lib.training.runner import Objective, fine_tune
from pipeline_lib.training.sft import sft_objective
from pipeline_lib.training.sft_data import IGNORE_INDEX, tokenize_sft_rows

FAST = TrainConfig(lr=3e-2, epochs=4, batch_size=4, max_length=256)


def chat_row(question: str, answer: str) -> dict[str, Any]:
    return {
        "prompt": [{"role": "user", "content": question}],
        "completion": [{"role": "assistant", "content": answer}],
        "id": question,  # extra keys are allowed and ignored
    }


# Answers of different lengths, so that batches need padding.
ROWS = [chat_row(f"What is {i} plus {i}?", f"The answer is {2 * i}." + " Indeed." * (i % 3)) for i in range(16)]


@pytest.fixture(scope="module")
def full_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("full") / "model"
    return out, train_sft(tiny_model, ROWS, out, FAST, seed=0, progress=False)


def completion_nll(model_path: Path, rows: list[dict[str, Any]]) -> float:
    """Mean NLL of the completion tokens, computed without the trainer: an independent check of saved weights."""
    tokenizer = load_tokenizer(model_path)
    model = load_causal_lm(model_path)
    total, count = 0.0, 0
    with torch.inference_mode():
        for row in rows:
            prompt = tokenizer(render_chat(tokenizer, row["prompt"]), add_special_tokens=False)["input_ids"]
            full_text = render_chat(tokenizer, row["prompt"] + row["completion"], add_generation_prompt=False)
            ids = tokenizer(full_text, add_special_tokens=False, return_tensors="pt")["input_ids"]
            logits = model(ids).logits[0, len(prompt) - 1 : -1]
            targets = ids[0, len(prompt) :]
            total += torch.nn.functional.cross_entropy(logits, targets, reduction="sum").item()
            count += len(targets)
    return total / count


def test_full_sft_lowers_the_loss_and_saves_a_model_that_reloads(full_run, tiny_model: Path) -> None:
    out, metrics = full_run
    json.dumps(metrics)  # the metrics go to MLflow and manifests as they are
    losses = [entry["loss"] for entry in metrics["loss_history"]]
    assert metrics["steps"] == len(losses) == 16  # 16 rows / batch 4 * 4 epochs
    assert metrics["final_loss"] == losses[-1] < losses[0] / 2
    assert metrics["examples"] == 16 and metrics["truncated"] == metrics["dropped"] == 0
    assert 0 < metrics["completion_tokens"] < metrics["total_tokens"]
    assert metrics["trained_tokens"] == 4 * metrics["total_tokens"]  # padding is not counted
    assert metrics["mode"] == "full" and not metrics["lora_merged"]
    assert metrics["trainable_params"] == count_parameters(load_causal_lm(tiny_model))

    # The saved weights are the trained ones: the completions got likelier.
    assert completion_nll(out, ROWS) < completion_nll(tiny_model, ROWS) - 1.0
    assert not list(out.parent.glob(".model.tmp-*")), "no temporary folder is left beside the output"
    tokenizer = load_tokenizer(out)
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.pad_token_id != tokenizer.eos_token_id
    model = load_causal_lm(out)
    assert model.config.pad_token_id == model.generation_config.pad_token_id == tokenizer.pad_token_id
    prompt = tokenizer(render_chat(tokenizer, "What is 3 plus 3?"), return_tensors="pt", add_special_tokens=False)
    generated = model.generate(**prompt, max_new_tokens=6, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]


class FirstBatch(TrainerCallback):
    """Keeps the first batch of the trainer's own dataloader, collated by the trainer's own collator."""

    batch: dict[str, torch.Tensor] | None = None

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs) -> None:
        self.batch = next(iter(train_dataloader))


def test_labels_cover_the_completion_tokens_and_nothing_else(tiny_model: Path, tmp_path: Path) -> None:
    tokenizer = load_tokenizer(tiny_model, padding_side="right")
    config = TrainConfig(epochs=1, batch_size=8)
    data = tokenize_sft_rows(ROWS[:8], tokenizer, config.max_length)
    spy = FirstBatch()
    fine_tune(
        sft_objective(config),
        tiny_model,
        tokenizer,
        data.dataset,
        tmp_path / "m",
        config,
        seed=0,
        dtype="float32",
        work_dir=tmp_path / "work",
        progress=False,
        callbacks=[spy],
    )

    batch = spy.batch
    assert batch is not None and batch["labels"].shape[0] == 8
    prompts = [tokenizer(render_chat(tokenizer, r["prompt"]), add_special_tokens=False)["input_ids"] for r in ROWS[:8]]
    expected = {row["completion"][0]["content"] + "<|im_end|>\n" for row in ROWS[:8]}
    seen = set()
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
        prompt_length = len(next(p for p in prompts if ids[: len(p)].tolist() == p))
        trained = labels != IGNORE_INDEX
        assert not trained[:prompt_length].any(), "prompt tokens carry no label"
        assert not trained[~mask.bool()].any(), "padding carries no label"
        assert torch.equal(labels[trained], ids[trained])
        assert trained.sum() == mask.sum() - prompt_length, "every completion token carries a label"
        seen.add(tokenizer.decode(ids[trained]))
    assert seen == expected
    assert (batch["input_ids"][batch["attention_mask"] == 0] == tokenizer.pad_token_id).all()


def test_first_loss_is_the_mean_nll_of_completion_tokens(tiny_model: Path, tmp_path: Path) -> None:
    """sft_reduction=token: checked against an independent forward pass, through gradient accumulation,
    and against TRL's own loss."""
    config = TrainConfig(epochs=1, batch_size=8, grad_accum=2, sft_reduction="token")  # one step over all 16 rows
    expected = completion_nll(tiny_model, ROWS)
    ours = train_sft(tiny_model, ROWS, tmp_path / "ours", config, progress=False)
    assert ours["steps"] == 1 and ours["loss_history"][0]["loss"] == pytest.approx(expected, abs=1e-4)

    objective = sft_objective(config)
    trl_own = Objective("sft", SFTTrainer, SFTConfig, objective.args)  # TRL's fused LM head loss
    tokenizer = load_tokenizer(tiny_model, padding_side="right")
    dataset = tokenize_sft_rows(ROWS, tokenizer, config.max_length).dataset
    theirs = fine_tune(
        trl_own,
        tiny_model,
        tokenizer,
        dataset,
        tmp_path / "theirs",
        config,
        seed=0,
        dtype="float32",
        work_dir=None,
        progress=False,
    )
    assert theirs["loss_history"][0]["loss"] == pytest.approx(expected, abs=1e-4)


def test_default_sft_loss_is_the_per_sequence_mean(tiny_model: Path, tmp_path: Path) -> None:
    """METHODS.md §7: each row's mean completion NLL, then the mean over rows (two equal micro-batches)."""
    config = TrainConfig(epochs=1, batch_size=8, grad_accum=2)
    expected = sum(completion_nll(tiny_model, [row]) for row in ROWS) / len(ROWS)
    assert abs(expected - completion_nll(tiny_model, ROWS)) > 1e-3, "rows of unequal lengths tell the two apart"
    ours = train_sft(tiny_model, ROWS, tmp_path / "ours", config, progress=False)
    assert ours["steps"] == 1 and ours["loss_history"][0]["loss"] == pytest.approx(expected, abs=1e-4)


def test_lora_is_merged_into_a_plain_model(tiny_model: Path, tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    lora = LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"])
    config = FAST.model_copy(update={"mode": "lora", "lora": lora, "epochs": 2})
    with stage_display("train-policy (round-1/train-policy)"):
        metrics = train_sft(tiny_model, ROWS, tmp_path / "merged", config, progress=True)

    err = capfd.readouterr().err
    assert "train-policy (round-1/train-policy): training sft: 100%" in err and "loss=" in err
    assert "'loss'" not in err, "the stage's bar with the loss on it, no per-step dicts"
    base_model = load_causal_lm(tiny_model)
    targeted = [m for name, m in base_model.named_modules() if name.rsplit(".", 1)[-1] in lora.target_modules]
    assert metrics["trainable_params"] == sum(lora.r * (m.in_features + m.out_features) for m in targeted)
    assert metrics["mode"] == "lora" and metrics["lora_merged"]
    assert metrics["final_loss"] < metrics["loss_history"][0]["loss"]

    out = tmp_path / "merged"
    assert not list(out.glob("adapter*")), "a plain HF folder, not a PEFT adapter"
    merged, base = load_file(out / "model.safetensors"), load_file(tiny_model / "model.safetensors")
    assert merged.keys() == base.keys()
    changed = {name for name in base if not torch.equal(merged[name], base[name])}
    parts = ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj")
    assert changed == {f"model.layers.{i}.{part}.weight" for i in range(2) for part in parts}
    assert completion_nll(out, ROWS) < completion_nll(tiny_model, ROWS)


def test_same_seed_same_weights_other_seed_other_weights(tiny_model: Path, tmp_path: Path) -> None:
    config = TrainConfig(lr=1e-2, epochs=2, batch_size=4, lora=LoraConfig(dropout=0.1), mode="lora")
    (tmp_path / "a").mkdir()  # an empty folder is the caller's scratch folder: filled in place
    weights = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        train_sft(tiny_model, ROWS[:8], tmp_path / name, config, seed=seed, progress=False)
        weights[name] = load_file(tmp_path / name / "model.safetensors")
    assert not (tmp_path / ".a.lock").exists() and (tmp_path / ".b.lock").exists()
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])
    assert not all(torch.equal(weights["a"][k], weights["c"][k]) for k in weights["a"])


def test_truncation_is_counted_and_rows_without_completion_are_dropped(tiny_model: Path, tmp_path: Path) -> None:
    tokenizer = load_tokenizer(tiny_model, padding_side="right")
    prompt_length = len(tokenizer(render_chat(tokenizer, "hi"), add_special_tokens=False)["input_ids"])
    max_length = prompt_length + 5
    rows = [
        chat_row("hi", "ok"),  # fits
        chat_row("hi", "a much longer answer that cannot fit in five tokens"),  # cut, kept
        chat_row("hi " * 20, "ok"),  # its prompt alone fills max_length: dropped
        chat_row("hello", "yes"),
    ]
    data = tokenize_sft_rows(rows, tokenizer, max_length)
    assert (data.rows, data.truncated, data.dropped, len(data.dataset)) == (4, 2, 1, 3)
    cut = data.dataset[1]
    assert len(cut["input_ids"]) == max_length
    assert cut["labels"] == [IGNORE_INDEX] * prompt_length + cut["input_ids"][prompt_length:]

    config = TrainConfig(epochs=1, batch_size=4, max_length=max_length)
    metrics = train_sft(tiny_model, rows, tmp_path / "m", config, progress=False)
    assert (metrics["truncated"], metrics["dropped"], metrics["examples"], metrics["steps"]) == (2, 1, 3, 1)
    assert metrics["total_tokens"] == sum(len(ids) for ids in data.dataset["input_ids"])

    with pytest.raises(UserError, match="all 1 training rows .* train.max_length"):
        tokenize_sft_rows(rows[2:3], tokenizer, max_length)


def test_user_mistakes_raise_user_errors(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no training rows"):
        train_sft(tiny_model, [], tmp_path / "m", FAST)
    with pytest.raises(UserError, match="training row 1 needs 'prompt' and 'completion'"):
        train_sft(tiny_model, [ROWS[0], {"prompt": "hi"}], tmp_path / "m", FAST)
    with pytest.raises(UserError, match="training row 0: chat message 0"):
        train_sft(tiny_model, [{"prompt": [{"role": "user"}], "completion": "ok"}], tmp_path / "m", FAST)
    with pytest.raises(UserError, match="train.optimizer 'ondare'"):
        train_sft(tiny_model, ROWS, tmp_path / "m", FAST.model_copy(update={"optimizer": "ondare"}))
    lora = FAST.model_copy(update={"mode": "lora", "lora": LoraConfig(target_modules=["no_such_proj"])})
    with pytest.raises(UserError, match="train.lora.target_modules"):
        train_sft(tiny_model, ROWS, tmp_path / "m", lora)
    assert not (tmp_path / "m").exists()
