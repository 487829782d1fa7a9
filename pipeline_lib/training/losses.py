"""The objectives' losses as plain tensor functions (METHODS.md §2–4, §7), shared by trainers and tests.

Conventions: ``labels`` hold the token ids to predict at each position of
``input_ids`` (``IGNORE_INDEX`` where nothing is trained), so position t's
logits predict label t+1, as in every causal LM. Sequence log-probabilities
are sums over response tokens.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100

PreferenceLoss = Literal["sigmoid", "hinge"]


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log π(label_t | prefix) per position, response mask), both (batch, length − 1), zero off the response."""
    labels = labels[:, 1:]
    mask = labels != IGNORE_INDEX
    logps = torch.gather(logits[:, :-1].log_softmax(-1), 2, labels.masked_fill(~mask, 0).unsqueeze(2)).squeeze(2)
    return logps * mask, mask


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Σ_t log π(y_t | x, y_<t) over response tokens, computed in float32 as the reference code does."""
    logps, _ = token_logps(logits.float(), labels)
    return logps.sum(-1)


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sequence mean NLL of the response tokens, averaged over the batch."""
    logps, mask = token_logps(logits, labels)
    return (-logps.sum(-1) / mask.sum(-1).clamp(min=1)).mean()


def preference_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    loss_type: PreferenceLoss = "sigmoid",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO's and SPIN's loss per pair, with the implicit rewards of both answers (detached).

    u = β·[(log π(y_c) − log π_ref(y_c)) − (log π(y_r) − log π_ref(y_r))];
    sigmoid: −log σ(u); hinge: relu(1 − u). SPIN is this with y_c the real
    answer, y_r the policy's own sample and π_ref the previous iterate.
    """
    logits = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * logits)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * logits)
    else:
        raise ValueError(f"unknown preference loss {loss_type!r}; use 'sigmoid' or 'hinge'")
    chosen_rewards = beta * (policy_chosen - ref_chosen).detach()
    rejected_rewards = beta * (policy_rejected - ref_rejected).detach()
    return losses, chosen_rewards, rejected_rewards


def ift_weights(logps: torch.Tensor, mask: torch.Tensor, gamma: float, detach: bool = False) -> torch.Tensor:
    """IFT's relation-propagation weights: c_t = Σ_{j≥t} γ^{j−t}·ℓ_j / n, w_t = c_t·n / Σ_s c_s.

    ``logps`` and ``mask`` come from ``token_logps``. γ = 0 gives weight 1 on
    every position, as in the reference code. The reference lets gradients
    flow through w; ``detach`` stops them.
    """
    if gamma == 0:
        return torch.ones_like(logps)
    n = mask.sum(-1, keepdim=True).clamp(min=1)
    items = (-logps / n) * mask
    # Discounted sum towards the end of the sequence, as a matrix product: exact,
    # differentiable, and O(length²) only in the sizes a training row has.
    length = items.shape[-1]
    position = torch.arange(length, device=items.device)
    offset = position.unsqueeze(0) - position.unsqueeze(1)  # [t, j] = j − t
    discount = torch.where(offset >= 0, torch.tensor(gamma, dtype=items.dtype, device=items.device) ** offset.clamp(min=0), 0)
    c = (items @ discount.T) * mask
    # A row whose every token is predicted with certainty has Σc = 0 (and ℓ = 0): weight 0, not NaN.
    weights = c * (n / c.sum(-1, keepdim=True).clamp(min=torch.finfo(c.dtype).tiny))
    return weights.detach() if detach else weights


def ift_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float, detach: bool = False) -> torch.Tensor:
    """Batch mean of Σ_t ℓ_t·w_t / n on the pass-2 logits (the mixed-embedding forward) against true labels."""
    logps, mask = token_logps(logits, labels)
    weights = ift_weights(logps, mask, gamma, detach)
    return ((-logps * weights).sum(-1) / mask.sum(-1).clamp(min=1)).mean()


def figa_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    kinds: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 0.5,
    negative_band: tuple[float, float] = (0.0, 0.6),
) -> torch.Tensor:
    """FIGA's loss: Σ w·ℓ / #(w ≠ 0) over a micro-batch.

    ``kinds`` is aligned with ``labels``: +1 where a revised token is in the
    positive set A, −1 where an original token is in the negative set D, 0
    elsewhere. A gets +α; D gets −β only where the token's NLL lies in
    ``negative_band`` (a hard mask recomputed each step, no gradient through
    it); everything else gets 0 and is not counted.
    """
    logps, mask = token_logps(logits, labels)
    nll = -logps
    kinds = kinds[:, 1:]
    low, high = negative_band
    in_band = (nll.detach() >= low) & (nll.detach() <= high)
    weights = torch.where(kinds > 0, alpha, 0.0) - torch.where((kinds < 0) & in_band, beta, 0.0)
    weights = weights.to(nll.dtype) * mask
    counted = (weights != 0).sum()
    return (weights * nll).sum() / counted.clamp(min=1)
