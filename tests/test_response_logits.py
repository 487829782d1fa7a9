"""Training projects only each row's response span through the LM head, and the losses read the same numbers."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pipeline_lib.models import load_causal_lm, load_tokenizer
from pipeline_lib.training.collate import SequenceCollator
from pipeline_lib.training.logits import response_logits, response_spans, with_response_logits
from pipeline_lib.training.losses import IGNORE_INDEX, sft_loss
from pipeline_lib.training.sft_data import tokenize_sft_rows

I = IGNORE_INDEX


def test_each_row_keeps_the_position_before_its_first_label_to_its_last_label() -> None:
    labels = torch.tensor([[I, I, I, 5, 6, I, I], [I, I, I, I, 7, 8, 9], [I, I, I, I, I, I, I], [3, 4, I, I, I, I, I]])
    spans = response_spans(labels)
    assert spans.positions.tolist() == [[2, 3, 4, 4], [3, 4, 5, 6], [0, 0, 0, 0], [0, 1, 1, 1]]
    assert spans.real.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0]]
    # Position k's logits still predict label k + 1; padding and untrained rows are ignored.
    assert spans.take(labels, I).tolist() == [[I, 5, 6, I], [I, 7, 8, 9], [I, I, I, I], [3, 4, I, I]]
    assert spans.put(torch.zeros(4, 7, dtype=torch.long), spans.positions + 10)[1].tolist() == [0, 0, 0, 13, 14, 15, 16]


@pytest.fixture(scope="module")
def batch(tiny_model: Path) -> dict[str, torch.Tensor]:
    tokenizer = load_tokenizer(tiny_model, padding_side="right")
    rows = [
        {"prompt": [{"role": "user", "content": "Tell me a long story about a cat. " * (i + 2)}], "completion": "No." * (i + 1)}
        for i in range(3)
    ]
    data = tokenize_sft_rows(rows, tokenizer, 256)
    return SequenceCollator(tokenizer.pad_token_id)([data.dataset[i] for i in range(3)])


def test_span_logits_are_the_full_logits_there_and_give_the_same_loss_and_gradients(tiny_model, batch) -> None:
    model = load_causal_lm(tiny_model)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    logits, spans = response_logits(model, batch["labels"], **inputs)
    full = model(**inputs).logits
    # Long prompts, short answers: most positions never reach the LM head.
    assert logits.shape[1] < batch["labels"].shape[1] / 5
    kept = full.gather(1, spans.positions[..., None].expand(-1, -1, full.shape[-1]))
    torch.testing.assert_close(logits, kept, rtol=1e-5, atol=1e-5)

    sft_loss(logits, spans.take(batch["labels"], I)).backward()
    window_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    expected = sft_loss(full, batch["labels"])
    expected.backward()
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(window_grads[name], parameter.grad, rtol=1e-4, atol=1e-7)


def test_a_model_without_logits_to_keep_gets_the_whole_sequence(batch) -> None:
    class NoKeep(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            return SimpleNamespace(logits=torch.zeros(*input_ids.shape, 4))

    labels = batch["labels"]
    logits, spans = response_logits(NoKeep(), labels, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert logits.shape[1] == labels.shape[1]
    assert torch.equal(spans.take(labels, I), labels)


def test_the_models_own_token_mean_loss_on_the_spans_is_the_whole_sequences(tiny_model, batch) -> None:
    """sft_reduction=token on CPU: the model's loss (the Trainer's num_items_in_batch included) reads the same
    numbers when only the spans reach the LM head, and gives the same gradients."""
    model = load_causal_lm(tiny_model)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": batch["labels"]}
    kept = with_response_logits(model, inputs)
    assert kept["logits_to_keep"].shape[1] < batch["labels"].shape[1] / 5
    for extra in ({}, {"num_items_in_batch": torch.tensor(50)}):
        model.zero_grad()
        loss = model(**kept, **extra).loss
        loss.backward()
        window_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        model.zero_grad()
        expected = model(**inputs, **extra).loss
        expected.backward()
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
        for name, parameter in model.named_parameters():
            torch.testing.assert_close(window_grads[name], parameter.grad, rtol=1e-4, atol=1e-7)
