"""transformers Trainers for the objectives whose loss is new: DPO/SPIN, IFT and FIGA.

Each overrides ``compute_loss`` only; batching, schedules, optimizers,
gradient accumulation and saving stay the Trainer's. The losses themselves
are the tensor functions in ``losses``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from transformers import PreTrainedConfig, Trainer

from pipeline_lib.training.config import FigaConfig, IftConfig, PreferenceConfig
from pipeline_lib.training.logits import Spans, response_logits
from pipeline_lib.training.losses import (
    IGNORE_INDEX,
    figa_loss,
    ift_loss,
    preference_loss,
    sequence_logps,
)


@contextmanager
def dropout_off(model: torch.nn.Module) -> Iterator[None]:
    """Every dropout rate of ``model`` set to 0 inside the block, and restored after it.

    That is each ``torch.nn.Dropout`` (LoRA's included) and the rates transformers
    applies functionally, read at forward time from a module attribute (Llama's
    ``attention_dropout``) or from the config (Falcon's). Restoring them keeps
    the saved config as it was loaded.
    """
    rates = [(owner, name, value) for owner in _rate_owners(model) for name, value in _dropout_rates(owner)]
    for owner, name, _ in rates:
        setattr(owner, name, 0.0)
    try:
        yield
    finally:
        for owner, name, value in rates:
            setattr(owner, name, value)


def _rate_owners(model: torch.nn.Module) -> list[Any]:
    modules = list(model.modules())
    configs = {id(c): c for m in modules if isinstance(c := getattr(m, "config", None), PreTrainedConfig)}
    return [*modules, *configs.values()]


def _dropout_rates(owner: Any) -> list[tuple[str, float]]:
    if isinstance(owner, torch.nn.Dropout):
        return [("p", owner.p)] if owner.p > 0 else []
    return [
        (name, value)
        for name, value in vars(owner).items()
        if isinstance(value, float) and value > 0 and ("dropout" in name or name.endswith("pdrop"))
    ]


class ObjectiveTrainer(Trainer):
    """A Trainer whose loss is a per-micro-batch mean, with extra metrics averaged into each log."""

    # DPO, SPIN and IFT turn it off: their reference trainers do (TRL's DPO by default), and the
    # preference rewards compare the policy with reference log-probabilities computed without it.
    keeps_dropout = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Our losses are means over their micro-batch: the Trainer divides by the accumulation steps.
        self.loss_is_scaled_for_ga = False
        self._logged: dict[str, list[float]] = defaultdict(list)

    def train(self, *args: Any, **kwargs: Any) -> Any:
        with nullcontext() if self.keeps_dropout else dropout_off(self.model):
            return super().train(*args, **kwargs)

    def record(self, **values: torch.Tensor | float) -> None:
        for name, value in values.items():
            self._logged[name].append(float(value.float().mean()) if isinstance(value, torch.Tensor) else value)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs:
            logs = {**logs, **{k: sum(v) / len(v) for k, v in self._logged.items() if v}}
            self._logged.clear()
        super().log(logs, *args, **kwargs)


class PreferenceTrainer(ObjectiveTrainer):
    """DPO (sigmoid) and SPIN (sigmoid or hinge): chosen rows then rejected rows in one forward pass.

    The reference model is frozen for the whole run (the starting model: the
    SFT model for DPO, the previous iterate for SPIN), so its log-probabilities
    are computed once before training (``ref_logps`` in each batch) instead of
    keeping a second model in memory.
    """

    keeps_dropout = False

    def __init__(self, *args: Any, preference: PreferenceConfig, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.preference = preference

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logits, spans = response_logits(
            model, inputs["labels"], input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        )
        logps = sequence_logps(logits, spans.take(inputs["labels"], IGNORE_INDEX))
        ref = inputs["ref_logps"].to(logps.device)
        half = logps.shape[0] // 2
        losses, chosen, rejected = preference_loss(
            logps[:half], logps[half:], ref[:half], ref[half:], self.preference.beta, self.preference.loss_type
        )
        self.record(
            **{
                "rewards/chosen": chosen,
                "rewards/rejected": rejected,
                "rewards/accuracies": (chosen > rejected).float(),
                "rewards/margins": chosen - rejected,
                "logps/chosen": logps[:half].detach(),
                "logps/rejected": logps[half:].detach(),
            }
        )
        loss = losses.mean()
        return (loss, {"logits": logits}) if return_outputs else loss


class IFTTrainer(ObjectiveTrainer):
    """Intuitive Fine-Tuning (METHODS.md §3): a no-grad pass for the model's guesses, then a pass on
    embeddings mixed between the true tokens and those guesses, with relation-propagation weights.

    The reference code embeds both passes with a frozen copy of the embedding
    table, re-synced after every optimizer step; reading the current table
    detached is the same thing without the copy (the weights only change at
    an optimizer step).
    """

    keeps_dropout = False

    def __init__(self, *args: Any, ift: IftConfig, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ift = ift
        # Only a λ that is 0 on every step takes the plain pass. One that comes out 0 on some steps (the
        # linear schedule's start, a clamped noisy draw) keeps the frozen-embedding pass, as the reference
        # does: the plain pass would give the input embedding a gradient the reference never produces.
        self._never_mixes = ift.lam == 0 and (ift.lambda_schedule == "static" or ift.lambda_min == 0)
        self._noise = torch.Generator().manual_seed(self.args.seed)
        self._noise_step, self._noise_value = -1, 0.0

    def current_lambda(self) -> float:
        """λ for this optimizer step: static, or linear from ``lambda_min`` over ``lambda_warmup_steps``; times
        (1 + std·N(0,1)) when noisy; clamped to [0, 1]."""
        ift, step = self.ift, self.state.global_step
        lam = ift.lam
        if ift.lambda_schedule == "linear":
            ramp = min(step / max(1, ift.lambda_warmup_steps), 1.0)
            lam = ift.lambda_min + (ift.lam - ift.lambda_min) * ramp
        if ift.lambda_noise_std > 0:
            if step != self._noise_step:  # one draw per optimizer step, shared by its micro-batches
                self._noise_step, self._noise_value = step, torch.randn(1, generator=self._noise).item()
            lam += self._noise_value * ift.lambda_noise_std * lam
        return min(max(lam, 0.0), 1.0)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        input_ids, labels, mask = inputs["input_ids"], inputs["labels"], inputs["attention_mask"]
        lam = self.current_lambda()
        if self._never_mixes:
            # The plain forward pass: a configured λ = 0 with γ = 0 is exactly per-sequence SFT, gradients included.
            logits, spans = response_logits(model, labels, input_ids=input_ids, attention_mask=mask)
        else:
            logits, spans = self.mixed_logits(model, input_ids, labels, mask, lam)
        loss = ift_loss(logits, spans.take(labels, IGNORE_INDEX), self.ift.gamma, self.ift.detach_weights)
        self.record(ift_lambda=lam)
        return (loss, {"logits": logits}) if return_outputs else loss

    @staticmethod
    def mixed_logits(model, input_ids, labels, mask, lam: float) -> tuple[torch.Tensor, Spans]:
        """Pass 2's logits on (1 − λ)·E(true) + λ·E(guess) from the detached embedding table, with their spans."""
        table = model.get_input_embeddings().weight.detach()
        true_embeds = torch.nn.functional.embedding(input_ids, table)
        with torch.no_grad():
            guess_logits, spans = response_logits(model, labels, inputs_embeds=true_embeds, attention_mask=mask)
            guesses = spans.put(input_ids, guess_logits.argmax(-1))
        # Position t gets the guess made at t − 1 from the true prefix; prompt and padding stay true.
        shifted = torch.cat([input_ids[:, :1], guesses[:, :-1]], dim=1)
        mixed_ids = torch.where(labels == IGNORE_INDEX, input_ids, shifted)
        embeds = (1 - lam) * true_embeds + lam * torch.nn.functional.embedding(mixed_ids, table)
        return response_logits(model, labels, inputs_embeds=embeds, attention_mask=mask)


class FigaTrainer(ObjectiveTrainer):
    """FIGA (METHODS.md §4): revised and original answers interleaved in one forward pass, weighted by
    the edit script between them (``token_kind``: +1 positive, −1 negative candidate, 0 untrained)."""

    def __init__(self, *args: Any, figa: FigaConfig, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.figa = figa

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logits, spans = response_logits(
            model, inputs["labels"], input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        )
        figa = self.figa
        loss = figa_loss(
            logits,
            spans.take(inputs["labels"], IGNORE_INDEX),
            spans.take(inputs["token_kind"], 0),
            figa.alpha,
            figa.beta,
            tuple(figa.negative_band),
        )
        kinds = inputs["token_kind"]
        self.record(figa_positive_tokens=float((kinds > 0).sum()), figa_negative_candidates=float((kinds < 0).sum()))
        return (loss, {"logits": logits}) if return_outputs else loss
