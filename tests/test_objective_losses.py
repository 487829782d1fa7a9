"""IFT, DPO/SPIN and FIGA (METHODS.md §2–4, §7) against independent computations written out here.

Expected values come from separate forward passes and plain Python loops, not
from the library's loss functions; the tiny random Llama keeps each pass cheap.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from transformers import TrainerCallback, TrainingArguments

from pipeline_lib.models import load_causal_lm, load_tokenizer
from pipeline_lib.training.objectives import train_model
from pipeline_lib.training.collate import PairCollator, SequenceCollator
from pipeline_lib.training.config import IftConfig, LoraConfig, PreferenceConfig, TrainConfig
from pipeline_lib.training.figa_data import token_kinds
from pipeline_lib.training.losses import figa_loss, ift_weights, preference_loss
from pipeline_lib.training.objectives import FIELDS, add_reference_logps
from pipeline_lib.training.sft_data import tokenize_sft_rows
from pipeline_lib.training.trainers import IFTTrainer, PreferenceTrainer

IGNORE = -100


def prompt(i: int) -> list[dict[str, str]]:
    # A short system message: the template's default one would triple every sequence's length.
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"What is {i} plus {i}?"}]


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    return load_tokenizer(tiny_model, padding_side="right")


def fresh_model(path: Path):
    model = load_causal_lm(path)
    model.train()  # as in training; the tiny Llama has no dropout, so passes are deterministic
    return model


def trainer_args(tmp_path: Path) -> TrainingArguments:
    return TrainingArguments(output_dir=str(tmp_path), report_to="none", remove_unused_columns=False, use_cpu=True)


def grads_of(model) -> dict[str, torch.Tensor]:
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return grads


# ---------------------------------------------------------------------------------------------- IFT


@pytest.fixture(scope="module")
def sft_batch(tokenizer) -> dict[str, torch.Tensor]:
    # Completions of different lengths, so the batch is padded and n differs per row.
    rows = [{"prompt": prompt(i), "completion": f"The answer is {2 * i}." + " Indeed." * i} for i in range(3)]
    data = tokenize_sft_rows(rows, tokenizer, 64)
    batch = SequenceCollator(tokenizer.pad_token_id)([data.dataset[i] for i in range(3)])
    lengths = batch["attention_mask"].sum(-1)
    assert len(set(lengths.tolist())) == 3  # really padded
    return batch


def response_nll(logits: torch.Tensor, labels: torch.Tensor) -> list[list[tuple[int, torch.Tensor]]]:
    """Per row, (position t, ℓ_t) for every response token, where logits at t predict labels at t + 1."""
    rows = []
    for b in range(labels.shape[0]):
        row = []
        for t in range(labels.shape[1] - 1):
            target = int(labels[b, t + 1])
            if target != IGNORE:
                row.append((t, -logits[b, t].log_softmax(-1)[target]))
        rows.append(row)
    return rows


def per_sequence_mean_sft(model, batch) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    rows = response_nll(logits, batch["labels"])
    return torch.stack([torch.stack([nll for _, nll in row]).mean() for row in rows]).mean()


def test_ift_with_lambda_and_gamma_zero_is_per_sequence_mean_sft(tiny_model, sft_batch, tmp_path) -> None:
    model = fresh_model(tiny_model)
    trainer = IFTTrainer(model=model, args=trainer_args(tmp_path), ift=IftConfig(lam=0, gamma=0))
    loss = trainer.compute_loss(model, sft_batch)
    loss.backward()
    ift_grads = grads_of(model)

    expected = per_sequence_mean_sft(model, sft_batch)
    expected.backward()
    sft_grads = grads_of(model)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    # Per-sequence, not per-token, mean: the two differ on rows of unequal lengths.
    labels = sft_batch["labels"][:, 1:]
    logits = model(input_ids=sft_batch["input_ids"], attention_mask=sft_batch["attention_mask"]).logits
    per_token = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)
    assert abs(per_token.item() - loss.item()) > 1e-3

    # Every gradient matches, the tied embedding / output-head matrix included: at λ = 0 there is nothing
    # to mix, so IFT runs the plain forward pass rather than one on frozen embeddings.
    assert set(ift_grads) == set(sft_grads)
    for name, grad in sft_grads.items():
        torch.testing.assert_close(ift_grads[name], grad, rtol=1e-5, atol=1e-7, msg=lambda m, n=name: f"{n}: {m}")


def ift_by_hand(model, batch, lam: float, gamma: float, detach: bool) -> tuple[torch.Tensor, int]:
    """IFT written out step by step (METHODS.md §3), with the weights from explicit loops.

    Returns the loss and how many response inputs the model's guesses changed.
    """
    input_ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    table = model.get_input_embeddings().weight.detach()  # the frozen copy
    with torch.no_grad():
        guesses = model(input_ids=input_ids, attention_mask=mask).logits.argmax(-1)
    mixed = input_ids.clone()
    changed = 0
    for b in range(input_ids.shape[0]):
        for t in range(1, input_ids.shape[1]):
            if labels[b, t] != IGNORE:  # a response position: the guess made at t − 1 from the true prefix
                mixed[b, t] = guesses[b, t - 1]
                changed += int(mixed[b, t] != input_ids[b, t])
    embeds = (1 - lam) * table[input_ids] + lam * table[mixed]
    logits = model(inputs_embeds=embeds, attention_mask=mask).logits
    losses = []
    for row in response_nll(logits, labels):  # ℓ against the true next tokens
        n = len(row)
        positions = [t for t, _ in row]
        nll = [value for _, value in row]
        c = []
        for i in range(n):
            total = 0
            for j in range(i, n):
                total = total + gamma ** (positions[j] - positions[i]) * nll[j]
            c.append(total / n)
        c_sum = sum(c)
        w = [c_i * n / c_sum for c_i in c]
        if detach:
            w = [w_i.detach() for w_i in w]
        losses.append(sum(nll[i] * w[i] for i in range(n)) / n)
    return torch.stack(losses).mean(), changed


def test_ift_matches_a_hand_written_implementation(tiny_model, sft_batch, tmp_path) -> None:
    lam, gamma = 0.3, 0.95
    model = fresh_model(tiny_model)
    results = {}
    for detach in (False, True):
        trainer = IFTTrainer(
            model=model, args=trainer_args(tmp_path), ift=IftConfig(lam=lam, gamma=gamma, detach_weights=detach)
        )
        loss = trainer.compute_loss(model, sft_batch)
        loss.backward()
        grads = grads_of(model)
        expected, changed = ift_by_hand(model, sft_batch, lam, gamma, detach)
        expected.backward()
        expected_grads = grads_of(model)
        assert changed > 5  # the random model's guesses really differ from the true tokens
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
        for name, grad in expected_grads.items():
            torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
        results[detach] = loss.item(), grads

    # Detaching the weights leaves the loss and changes only the gradients.
    assert results[True][0] == pytest.approx(results[False][0], rel=1e-6)
    difference = max((results[True][1][n] - results[False][1][n]).abs().max().item() for n in results[True][1])
    assert difference > 1e-4
    # λ and γ matter: the plain SFT loss is another number.
    assert abs(per_sequence_mean_sft(model, sft_batch).item() - results[False][0]) > 1e-3


def first_step_with_lambda_zero(trainer: IFTTrainer) -> int:
    for step in range(50):
        trainer.state.global_step = step
        if trainer.current_lambda() == 0:
            return step
    raise AssertionError("no step with λ = 0")


@pytest.mark.parametrize(
    "ift",
    [
        pytest.param(IftConfig(lam=0.2, lambda_schedule="linear", lambda_min=0.0), id="linear-schedule-start"),
        pytest.param(IftConfig(lam=0.2, lambda_noise_std=100.0), id="noisy-lambda-clamped"),
    ],
)
def test_ift_step_whose_lambda_is_zero_keeps_the_frozen_embedding_pass(tiny_model, sft_batch, tmp_path, ift) -> None:
    """Only a configured λ = 0 takes the plain pass: a step whose λ merely comes out 0 runs on frozen
    embeddings, as the reference code does, so the input embedding gets no gradient through the inputs."""
    model = fresh_model(tiny_model)
    trainer = IFTTrainer(model=model, args=trainer_args(tmp_path), ift=ift)
    first_step_with_lambda_zero(trainer)
    loss = trainer.compute_loss(model, sft_batch)
    loss.backward()
    grads = grads_of(model)
    trainer.log({"loss": loss.item()})
    assert trainer.state.log_history[-1]["ift_lambda"] == 0.0

    expected, _ = ift_by_hand(model, sft_batch, 0.0, ift.gamma, ift.detach_weights)
    expected.backward()
    expected_grads = grads_of(model)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")

    # Non-vacuous: the plain pass (configured λ = 0) gives the (tied) embedding matrix another gradient.
    plain = IFTTrainer(model=model, args=trainer_args(tmp_path), ift=ift.model_copy(update={"lam": 0.0}))
    plain.compute_loss(model, sft_batch).backward()
    embedding = "model.embed_tokens.weight"
    assert (grads_of(model)[embedding] - expected_grads[embedding]).abs().max() > 1e-3


def test_ift_weights_on_hand_made_log_probabilities() -> None:
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    nll = torch.tensor([[0.0, 0.0, 2.0, 0.5, 1.0, 3.0, 0.0], [0.0, 0.1, 4.0, 0.2, 0.3, 1.5, 0.7]], dtype=torch.float64)
    logps = (-nll * mask).requires_grad_(True)
    for gamma in (0.95, 0.5):
        weights = ift_weights(logps, mask, gamma)
        for b in range(2):
            positions = [t for t in range(7) if mask[b, t]]
            n = len(positions)
            c = {t: sum(gamma ** (j - t) * nll[b, j].item() for j in positions if j >= t) / n for t in positions}
            total = sum(c.values())
            for t in range(7):
                want = c[t] * n / total if t in c else 0.0
                assert weights[b, t].item() == pytest.approx(want, rel=1e-12, abs=1e-15), (gamma, b, t)
            assert weights[b][mask[b]].mean().item() == pytest.approx(1.0, rel=1e-12)
        # Not all ones: the weights favour early tokens followed by hard ones.
        assert weights[mask].max() > 1.2 and weights[mask].min() < 0.8
    # Gradients flow through the weights unless detached.
    assert ift_weights(logps, mask, 0.95).requires_grad
    assert not ift_weights(logps, mask, 0.95, detach=True).requires_grad
    assert torch.equal(ift_weights(logps, mask, 0.95, detach=True), ift_weights(logps, mask, 0.95).detach())
    # γ = 0 is plain SFT: weight 1 everywhere.
    assert torch.equal(ift_weights(logps, mask, 0.0), torch.ones_like(logps))


# ---------------------------------------------------------------------------------------- DPO / SPIN


def test_preference_loss_on_random_tensors() -> None:
    generator = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (3 * torch.randn(64, generator=generator, dtype=torch.float64) - 20 for _ in range(4))
    pc.requires_grad_(True)
    for beta in (0.1, 2.0):
        u = [(a - b) - (c - d) for a, b, c, d in zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist(), strict=True)]
        sigmoid, chosen, rejected = preference_loss(pc, pr, rc, rr, beta, "sigmoid")
        hinge, chosen_h, _ = preference_loss(pc, pr, rc, rr, beta, "hinge")
        for i, value in enumerate(u):
            assert sigmoid[i].item() == pytest.approx(-math.log(1 / (1 + math.exp(-beta * value))), rel=1e-12)
            assert hinge[i].item() == pytest.approx(max(0.0, 1 - beta * value), abs=1e-12)
        if beta == 2.0:  # both sides of the hinge are exercised
            assert (hinge == 0).sum() > 5 and (hinge > 0).sum() > 5
        torch.testing.assert_close(chosen, beta * (pc - rc).detach(), rtol=1e-12, atol=0)
        torch.testing.assert_close(rejected, beta * (pr - rr), rtol=1e-12, atol=0)
        assert torch.equal(chosen_h, chosen)
        assert not chosen.requires_grad and sigmoid.requires_grad
    with pytest.raises(ValueError):
        preference_loss(pc, pr, rc, rr, 0.1, "ipo")


def sequence_logp_by_hand(model, ids: list[int], labels: list[int]) -> float:
    """Σ log π(y_t | prefix) over the response tokens of one unpadded sequence, from its own forward pass."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    return sum(
        logits[t].log_softmax(-1)[labels[t + 1]].item() for t in range(len(ids) - 1) if labels[t + 1] != IGNORE
    )


@pytest.fixture(scope="module")
def spin_setup(tiny_model, tokenizer):
    """SPIN data (chosen = real answer, rejected = the policy's own sample), reference log-probabilities from
    the starting model, and a policy moved away from it (else u = 0 and every loss is log 2)."""
    rows = [
        {
            "prompt": prompt(i),
            "chosen": f"The answer is {2 * i}.",
            "rejected": f"{i} and {i} make {3 * i + 1}" * (1 + i % 2),
        }
        for i in range(4)
    ]
    data = tokenize_sft_rows(rows, tokenizer, 64, FIELDS["spin"])
    reference = fresh_model(tiny_model)
    collator = PairCollator(tokenizer.pad_token_id, "chosen", "rejected", interleave=False, floats=("ref_logps",))
    dataset = add_reference_logps(reference, data.dataset, collator)
    batch = collator([dataset[i] for i in range(len(dataset))])
    policy = copy.deepcopy(reference)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "layers" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=generator))
    by_hand = {}
    for side in ("chosen", "rejected"):
        for which, model in (("policy", policy), ("ref", reference)):
            by_hand[side, which] = torch.tensor(
                [sequence_logp_by_hand(model, row[f"{side}_input_ids"], row[f"{side}_labels"]) for row in dataset],
                dtype=torch.float64,
            )
    return batch, policy, by_hand


def test_spin_reference_logps_are_the_starting_models(spin_setup) -> None:
    batch, _, by_hand = spin_setup
    expected = torch.cat([by_hand["chosen", "ref"], by_hand["rejected", "ref"]]).float()
    torch.testing.assert_close(batch["ref_logps"], expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge"])
def test_spin_loss_is_dpo_with_real_chosen_and_generated_rejected(spin_setup, tmp_path, loss_type) -> None:
    batch, policy, by_hand = spin_setup
    beta = 0.1
    trainer = PreferenceTrainer(
        model=policy, args=trainer_args(tmp_path), preference=PreferenceConfig(beta=beta, loss_type=loss_type)
    )
    loss = trainer.compute_loss(policy, batch)

    real = by_hand["chosen", "policy"] - by_hand["chosen", "ref"]
    generated = by_hand["rejected", "policy"] - by_hand["rejected", "ref"]
    u = beta * (real - generated)
    assert (u.abs() > 0.05).all()  # the policy really moved from the reference
    if loss_type == "sigmoid":
        expected = torch.stack([-torch.log(torch.sigmoid(x)) for x in u]).mean()
    else:
        expected = torch.stack([torch.clamp(1 - x, min=0) for x in u]).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    at_reference = math.log(2) if loss_type == "sigmoid" else 1.0  # the loss when policy = reference
    assert abs(loss.item() - at_reference) > 1e-3

    # The logged rewards are β·(log π − log π_ref), averaged over the batch at the next log.
    trainer.log({"loss": loss.item()})
    logged = trainer.state.log_history[-1]
    assert logged["rewards/chosen"] == pytest.approx((beta * real).mean().item(), rel=1e-4, abs=1e-5)
    assert logged["rewards/rejected"] == pytest.approx((beta * generated).mean().item(), rel=1e-4, abs=1e-5)
    assert logged["rewards/margins"] == pytest.approx(u.mean().item(), rel=1e-4, abs=1e-5)
    assert logged["rewards/accuracies"] == pytest.approx((u > 0).double().mean().item())


# ---------------------------------------------------------------------------------------------- FIGA

EOS = 2
P = IGNORE  # a prompt position


@pytest.mark.parametrize(
    ("original", "revised", "original_kinds", "revised_kinds"),
    [
        pytest.param([P, P, 5, 6, 7, EOS], [P, P, 5, 9, 7, EOS], [0, 0, 0, -1, 0, 0], [0, 0, 0, 1, 0, 1], id="replace"),
        pytest.param([P, P, 5, 6, EOS], [P, P, 5, 8, 6, EOS], [0, 0, 0, 0, 0], [0, 0, 0, 1, 0, 1], id="insert"),
        pytest.param([P, P, 5, 6, 7, EOS], [P, P, 5, 7, EOS], [0, 0, 0, -1, 0, 0], [0, 0, 0, 0, 1], id="delete"),
        pytest.param(
            [P, P, 10, 11, 12, 13, EOS],
            [P, P, 10, 20, 12, 13, 14, EOS],
            [0, 0, 0, -1, 0, 0, 0],
            [0, 0, 0, 1, 0, 0, 1, 1],
            id="replace-and-insert",
        ),
        pytest.param([P, P, 5, 6, EOS], [P, P, 5, 6, EOS], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1], id="unchanged"),
        # The original's first EOS stays 0 even where the edit replaces it; a later EOS is an ordinary token.
        pytest.param([P, 5, EOS, 9], [P, 5, 8, 9], [0, 0, 0, 0], [0, 0, 1, 0], id="original-eos-replaced"),
        pytest.param([P, EOS, EOS], [P, 3, 3], [0, 0, -1], [0, 1, 1], id="second-eos-negative"),
        # Only the revised answer's first EOS is added to the positives.
        pytest.param([P, 5, 6], [P, 5, EOS, EOS], [0, 0, -1], [0, 0, 1, 1], id="revised-eos-first-only"),
        pytest.param([P, 5, 6, 7], [P, 5, 6, 7, EOS, EOS], [0, 0, 0, 0], [0, 0, 0, 0, 1, 1], id="appended-eos"),
    ],
)
def test_figa_token_kinds(original, revised, original_kinds, revised_kinds) -> None:
    got_revised, got_original = token_kinds(original, revised, EOS)
    assert got_revised == revised_kinds
    assert got_original == original_kinds
    # Prompt positions are never edited.
    for labels, kinds in ((original, got_original), (revised, got_revised)):
        assert all(kind == 0 for label, kind in zip(labels, kinds, strict=True) if label == IGNORE)


def test_figa_token_kinds_without_eos_id_and_with_prompts() -> None:
    revised, original = token_kinds([P, P, P, 5, 6, 2], [P, P, P, 5, 9, 2], None)
    assert revised == [0, 0, 0, 0, 1, 0] and original == [0, 0, 0, 0, -1, 0]
    # Completely different answers: every response token is edited, no prompt position is.
    revised, original = token_kinds([P] * 4 + [11, 12, EOS], [P] * 4 + [21, 22, 23, EOS], EOS)
    assert revised[:4] == [0] * 4 and original[:4] == [0] * 4
    assert revised[4:] == [1, 1, 1, 1] and original[4:] == [-1, -1, 0]


def logits_for(targets: list[int | None], margins: list[float], vocab: int = 4) -> tuple[torch.Tensor, list[float]]:
    """One row of logits whose position t predicts targets[t + 1] with the given logit margin over the rest.

    Returns the logits and each label's NLL, log(e^a + V − 1) − a, computed here in float64.
    """
    length = len(targets)
    logits = torch.zeros(length, vocab)
    nll = [math.nan] * length
    for t in range(1, length):
        if targets[t] is not None:
            logits[t - 1, targets[t]] = margins[t]
            nll[t] = math.log(math.exp(margins[t]) + vocab - 1) - margins[t]
    return logits, nll


def test_figa_loss_weights_and_negative_band() -> None:
    # Margins → NLL (vocab 4): 3 → 0.139, 2 → 0.341, 1 → 0.744, 0 → 1.386, 40 → ~0, −1 → 2.39.
    revised_labels = [P, P, 1, 2, 3, 0, EOS]
    revised_kinds = [1, 1, 0, 1, 0, 1, 1]  # the prompt's kinds are ignored (labels −100)
    revised_margins = [0, 0, 3.0, 0.0, 1.0, -1.0, 2.0]
    original_labels = [P, P, 1, 3, 3, 1, EOS, P]  # the last position stands for padding
    original_kinds = [-1, -1, -1, -1, -1, 0, 0, -1]
    original_margins = [0, 0, 3.0, 1.0, 40.0, 2.0, 3.0, 0]
    rows = [
        logits_for([None if x == IGNORE else x for x in labels], margins)
        for labels, margins in ((revised_labels, revised_margins), (original_labels, original_margins))
    ]
    length = len(original_labels)
    logits = torch.stack([F.pad(rows[0][0], (0, 0, 0, length - len(revised_labels))), rows[1][0]])
    labels = torch.tensor([revised_labels + [IGNORE], original_labels])
    kinds = torch.tensor([revised_kinds + [0], original_kinds])
    nll_revised, nll_original = rows[0][1], rows[1][1]

    def expected(alpha: float, beta: float, low: float, high: float) -> float:
        total, count = 0.0, 0
        for t, (label, kind) in enumerate(zip(revised_labels, revised_kinds, strict=True)):
            if label != IGNORE and kind > 0:
                total, count = total + alpha * nll_revised[t], count + 1
        for t, (label, kind) in enumerate(zip(original_labels, original_kinds, strict=True)):
            if label != IGNORE and kind < 0 and low <= nll_original[t] <= high:
                total, count = total - beta * nll_original[t], count + 1
        return total / max(count, 1)

    # Default band [0, 0.6]: of the original's negatives, NLL 0.139 (t = 2) and ~0 (t = 4) count, 0.744 (t = 3)
    # does not. Positives: revised t = 3, 5, 6 (t = 2 and 4 are kind 0, untrained). Count = 3 + 2.
    loss = figa_loss(logits, labels, kinds)
    by_hand = (nll_revised[3] + nll_revised[5] + nll_revised[6] - 0.5 * (nll_original[2] + nll_original[4])) / 5
    assert expected(1.0, 0.5, 0.0, 0.6) == pytest.approx(by_hand, rel=1e-12)
    assert loss.item() == pytest.approx(by_hand, rel=1e-5)
    # Other α, β, and the band the reference code kept until 2024-05-05, [0.6, 1.0]: only the 0.744 negative counts.
    assert figa_loss(logits, labels, kinds, alpha=2.0, beta=0.25).item() == pytest.approx(
        expected(2.0, 0.25, 0.0, 0.6), rel=1e-5
    )
    band = figa_loss(logits, labels, kinds, negative_band=(0.6, 1.0)).item()
    only_t3 = (nll_revised[3] + nll_revised[5] + nll_revised[6] - 0.5 * nll_original[3]) / 4
    assert band == pytest.approx(only_t3, rel=1e-5)

    # The band is inclusive at both ends: a bound equal to a token's NLL (as float32 computes it) counts it.
    nll32 = -logits[1, 2].log_softmax(-1)[3].item()  # original position 3's NLL (label at t = 3)
    assert figa_loss(logits, labels, kinds, negative_band=(nll32, nll32)).item() == pytest.approx(only_t3, rel=1e-5)
    zero32 = -logits[1, 3].log_softmax(-1)[3].item()  # margin 40: exactly 0 in float32
    assert zero32 == 0.0
    assert figa_loss(logits, labels, kinds, negative_band=(0.0, 0.0)).item() == pytest.approx(
        (nll_revised[3] + nll_revised[5] + nll_revised[6]) / 4, rel=1e-5
    )  # counted (w ≠ 0) though its ℓ is 0

    # No gradient through the band mask; the loss gradient is finite and nonzero.
    leaf = logits.clone().requires_grad_(True)
    figa_loss(leaf, labels, kinds).backward()
    assert torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0


def test_figa_loss_with_nothing_to_train_is_zero_not_nan() -> None:
    logits, nll = logits_for([None, None, 2, 3], [0, 0, 0.0, -1.0])
    assert min(nll[2:]) > 0.6
    logits = logits.unsqueeze(0).requires_grad_(True)
    labels = torch.tensor([[IGNORE, IGNORE, 2, 3]])
    # Untrained; negatives all out of the band; a "positive" on a prompt position (label −100).
    for kinds in ([0, 0, 0, 0], [0, 0, -1, -1], [0, 1, 0, 0]):
        loss = figa_loss(logits, labels, torch.tensor([kinds]))
        assert loss.item() == 0.0
        loss.backward()
        assert torch.isfinite(logits.grad).all()
        logits.grad = None


# ------------------------------------------------------------------------------------ all objectives


def objective_rows() -> list[dict[str, Any]]:
    return [
        {
            "prompt": prompt(i),
            "completion": f"It is {2 * i}.",
            "chosen": f"It is {2 * i}.",
            "rejected": f"Maybe {3 * i + 1}, I guess.",
            "revised": f"It is {2 * i}.",
            "original": f"It is {2 * i + 1}, sure.",
        }
        for i in range(4)
    ]


@pytest.mark.parametrize("objective", ["sft", "ift", "dpo", "spin", "figa"])
def test_every_objective_overfits_a_tiny_batch(tiny_model, tmp_path, objective) -> None:
    config = TrainConfig(objective=objective, lr=1e-2, epochs=6, batch_size=4, max_length=64)
    metrics = train_model(tiny_model, objective_rows(), tmp_path / "model", config, progress=False)
    losses = [entry["loss"] for entry in metrics["loss_history"]]
    assert metrics["steps"] == len(losses) == 6
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]
    if objective in ("dpo", "spin"):
        assert losses[0] == pytest.approx(math.log(2), abs=1e-4)  # policy = reference at the first step
        assert losses[-1] < 0.5 * losses[0]
    else:
        assert losses[-1] < losses[0] - 1.0


class DropoutSpy(TrainerCallback):
    """Keeps the first logged values; after the first optimizer step, runs the policy twice on the first
    batch in the mode the Trainer leaves it in (training)."""

    def __init__(self) -> None:
        self.first_log: dict[str, float] | None = None
        self.passes: list[torch.Tensor] = []  # two forward passes on the same batch
        self.lora_moved = False

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs) -> None:
        self.batch = next(iter(train_dataloader))

    def on_step_end(self, args, state, control, model=None, **kwargs) -> None:
        if state.global_step != 1:
            return
        assert model.training
        inputs = {"input_ids": self.batch["input_ids"], "attention_mask": self.batch["attention_mask"]}
        with torch.no_grad():
            self.passes = [model(**inputs).logits for _ in range(2)]
        # LoRA's B starts at 0, so its dropout can only show once the adapter has moved.
        self.lora_moved = any(p.abs().max() > 0 for name, p in model.named_parameters() if "lora_B" in name)

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        if self.first_log is None and "loss" in logs:
            self.first_log = dict(logs)


def train_lora_with_spy(model_path: Path, out: Path, objective: str) -> DropoutSpy:
    """Two optimizer steps of ``objective`` in LoRA mode with lora.dropout 0.05."""
    lora = LoraConfig(dropout=0.05)
    config = TrainConfig(objective=objective, mode="lora", lora=lora, lr=1e-2, epochs=2, batch_size=4, max_length=64)
    spy = DropoutSpy()
    metrics = train_model(model_path, objective_rows(), out, config, progress=False, callbacks=[spy])
    assert metrics["steps"] == 2 and spy.lora_moved
    return spy


@pytest.fixture(scope="module")
def tiny_model_with_attention_dropout(tiny_model, tmp_path_factory) -> Path:
    """The tiny Llama with attention_dropout 0.1, which transformers applies functionally while training."""
    out = tmp_path_factory.mktemp("attention-dropout")
    model = load_causal_lm(tiny_model)
    model.config.attention_dropout = 0.1
    model.save_pretrained(out)
    load_tokenizer(tiny_model).save_pretrained(out)
    return out


@pytest.mark.parametrize("objective", ["dpo", "spin"])
def test_preference_rewards_at_step_0_are_0_with_dropout_in_the_model(
    tiny_model_with_attention_dropout, tmp_path, objective
) -> None:
    """Policy = reference at step 0, so β·(log π − log π_ref) = 0: the reference log-probabilities are
    computed without dropout, and so must the policy's be. The model's own (attention) dropout bites at
    step 0, LoRA's (0.05) once the adapter has moved; both are off while training and restored after."""
    spy = train_lora_with_spy(tiny_model_with_attention_dropout, tmp_path / "model", objective)
    assert spy.first_log["rewards/chosen"] == pytest.approx(0.0, abs=1e-6)
    assert spy.first_log["rewards/rejected"] == pytest.approx(0.0, abs=1e-6)
    assert spy.first_log["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert torch.equal(spy.passes[0], spy.passes[1])
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["attention_dropout"] == 0.1, "the model's own setting is restored before saving"


@pytest.mark.parametrize(
    ("objective", "keeps_dropout"), [("dpo", False), ("spin", False), ("ift", False), ("figa", True)]
)
def test_lora_dropout_is_off_while_training_dpo_spin_and_ift(tiny_model, tmp_path, objective, keeps_dropout) -> None:
    """DPO, SPIN and IFT train without dropout, as their reference trainers do; FIGA (like SFT) keeps it."""
    spy = train_lora_with_spy(tiny_model, tmp_path / "model", objective)
    assert torch.equal(spy.passes[0], spy.passes[1]) is not keeps_dropout


def test_ift_weights_of_a_row_predicted_with_certainty_are_zero_not_nan() -> None:
    mask = torch.tensor([[False, True, True, True]])
    weights = ift_weights(torch.zeros(1, 4), mask, 0.95)
    assert torch.equal(weights, torch.zeros(1, 4))
