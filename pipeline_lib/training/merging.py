"""Online merging optimizers, OnDARE and OnTIES (METHODS.md §5; Lu et al., 2024).

Each step computes AdamW's update Δ the way the reference code does (HF's
AdamW: bias corrections folded into the step size, eps added to the
uncorrected √v, decoupled weight decay applied after the update), then
merges it with the reference delta τ = θ_sft − θ_base:

- OnDARE: τ̃ = dropout(τ, keep p) clipped to [−clip, clip], drawn once;
  each step Δ̃ = dropout(Δ, keep p) with a fresh mask; θ ← θ + α·τ̃ + (1−α)·Δ̃.
- OnTIES: τ̃ = the top-p share of |τ| per tensor, once; each step Δ̃ = the
  top-p share of |Δ|; the elected sign is sign(τ̃ + Δ̃) (≥ 0 counts as +);
  entries of either whose sign disagrees are zeroed; θ ← θ + α·τ̃' + (1−α)·Δ̃'.
  Ties at the top-k cut are common (at Adam's first step |Δ| ≈ lr for every
  entry), so which of them are kept matters: the lowest-index ones, the
  selection of the reference code's descending ``argsort`` wherever that
  sort is stable (torch's CUDA sort above 4,096 entries; its CPU sort in
  torch 2.13 is not, and the reference does not ask for ``stable=True``).

Where this departs from the reference code, on purpose:
- α = 0 turns merging off entirely, so p = 1, α = 0 is the HF-style AdamW
  above for both (METHODS.md requires it). That is not ``torch.optim.AdamW``,
  which adds eps to the bias-corrected √v̂: where gradients are tiny (≈ 1e-6
  at eps 1e-8) eps is no longer negligible and the two steps differ.
  The reference code still sign-filters OnTIES's update against τ at α = 0.
- Merging every K steps applies each in-between step to every parameter;
  the reference code returns after the first parameter on those steps.
- Dropout masks come from the optimizer's own seeded generator; at small p
  they are drawn as the gaps between kept entries (``kept_positions``: the
  same distribution from about p·n random numbers instead of n). OnTIES
  finds its top k without a full sort (``top_k_mask``: the same entries).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch

# Dropout at p up to this draws the kept positions (kept_positions), above it a uniform per entry.
SPARSE_BELOW = 0.1
# OnTIES's top-k on a tensor of more entries than SAMPLE_ABOVE first bounds the k-th largest from a
# sample of at most SAMPLE of them (kth_largest).
SAMPLE_ABOVE = 100_000
SAMPLE = 100_000


class OnlineMergingAdamW(torch.optim.Optimizer):
    """AdamW whose update is sparsified and merged with τ; ``merge`` is the method's own part.

    ``deltas`` maps ``id(parameter)`` to that parameter's τ (same shape); it is
    stored, sparsified, on the parameter's device and dtype.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        deltas: Mapping[int, torch.Tensor],
        reserve_p: float = 1.0,
        alpha: float = 0.0,
        rescale: bool = False,
        merge_every: int = 1,
        clip: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        if not 0 < reserve_p <= 1 or not 0 <= alpha < 1 or merge_every < 1:
            raise ValueError(
                f"need 0 < reserve_p <= 1, 0 <= alpha < 1, merge_every >= 1; got {reserve_p}, {alpha}, {merge_every}"
            )
        self.reserve_p, self.alpha, self.rescale = reserve_p, alpha, rescale
        self.merge_every, self.clip = merge_every, clip
        self.generator = torch.Generator().manual_seed(seed)
        for group in self.param_groups:
            for p in group["params"]:
                if id(p) not in deltas:
                    raise ValueError(f"no reference delta for a parameter of shape {tuple(p.shape)}")
                tau = deltas[id(p)].detach().to(device=p.device, dtype=p.dtype).clone()
                if tau.shape != p.shape:
                    raise ValueError(f"reference delta of shape {tuple(tau.shape)} for a parameter of shape {tuple(p.shape)}")
                self.state[p]["tau"] = self.sparsify_reference(tau)

    # The two methods differ only in these two.
    def sparsify_reference(self, tau: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def merge(self, p: torch.Tensor, delta: torch.Tensor, tau: torch.Tensor) -> None:
        raise NotImplementedError

    def dropout_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Keep each entry with probability p, scaled by 1/p (``F.dropout`` with a seeded generator)."""
        if self.reserve_p >= 1:
            return tensor
        if self.reserve_p > SPARSE_BELOW:
            keep = torch.rand(tensor.shape, generator=self.generator).to(tensor.device) < self.reserve_p
            return tensor.mul_(keep).div_(self.reserve_p)
        flat = tensor.view(-1)
        kept = kept_positions(flat.numel(), self.reserve_p, self.generator).to(flat.device)
        survivors = flat[kept].div_(self.reserve_p)
        flat.zero_()
        flat[kept] = survivors
        return tensor

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "step" not in state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    if self.merge_every > 1:
                        state["cached"] = torch.zeros_like(p)
                state["step"] += 1
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                step_size = group["lr"] * math.sqrt(1 - beta2 ** state["step"]) / (1 - beta1 ** state["step"])
                # exp_avg / (√v + eps) · −step_size, in one buffer: the same operations, two allocations fewer.
                delta = exp_avg_sq.sqrt().add_(group["eps"])
                torch.div(exp_avg, delta, out=delta).mul_(-step_size)

                if self.merge_every > 1:
                    cached = state["cached"]
                    if state["step"] % self.merge_every:
                        # An in-between step: plain AdamW, remembered so the merge step can redo it merged.
                        cached.add_(delta)
                        p.add_(delta)
                        self._decay(p, group)
                        continue
                    p.sub_(cached)
                    delta.add_(cached)
                    cached.zero_()

                if self.alpha > 0:
                    self.merge(p, delta, state["tau"])
                else:
                    p.add_(self.sparsify_update(delta))
                self._decay(p, group)
        return loss

    def sparsify_update(self, delta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def _decay(p: torch.Tensor, group: dict) -> None:
        if group["weight_decay"] > 0:
            p.add_(p, alpha=-group["lr"] * group["weight_decay"])


class OnDAREAdamW(OnlineMergingAdamW):
    """OnDARE: random drop-and-rescale of τ (once) and of every update."""

    def sparsify_reference(self, tau: torch.Tensor) -> torch.Tensor:
        return self.dropout_(tau).clamp_(-self.clip, self.clip)

    def sparsify_update(self, delta: torch.Tensor) -> torch.Tensor:
        before = delta.abs().sum() if self.rescale else None
        self.dropout_(delta)
        if before is not None and before >= 1e-8:
            after = delta.abs().sum()
            delta.mul_(before / (after + self.defaults["eps"])).clamp_(-self.clip, self.clip)
        return delta

    def merge(self, p: torch.Tensor, delta: torch.Tensor, tau: torch.Tensor) -> None:
        p.add_(tau, alpha=self.alpha)
        p.add_(self.sparsify_update(delta), alpha=1 - self.alpha)


class OnTIESAdamW(OnlineMergingAdamW):
    """OnTIES: top-p magnitude trimming of τ (once) and of every update, then sign election."""

    def sparsify_reference(self, tau: torch.Tensor) -> torch.Tensor:
        return self.trim_(tau)

    def sparsify_update(self, delta: torch.Tensor) -> torch.Tensor:
        return self.trim_(delta)

    def trim_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Keep the int(p·n) entries of largest magnitude (all of them if that is under 1); L1-rescale if asked."""
        k = int(self.reserve_p * tensor.numel())
        if self.reserve_p >= 1 or k < 1:
            return tensor
        flat = tensor.view(-1)
        magnitude = flat.abs()
        before = magnitude.sum() if self.rescale else None
        flat.mul_(top_k_mask(magnitude, k))
        if before is not None and before >= 1e-8:
            flat.mul_(before / flat.abs().sum())
        return tensor

    def merge(self, p: torch.Tensor, delta: torch.Tensor, tau: torch.Tensor) -> None:
        delta = self.trim_(delta)
        # The elected sign is + where τ̃ + Δ̃ ≥ 0; an entry survives where its own sign is the elected one
        # (a zero entry adds nothing either way). Booleans, not ±1 tensors: a byte per entry, not four.
        positive = (tau + delta) >= 0
        p.add_(tau * ((tau > 0) == positive), alpha=self.alpha)
        p.add_(delta * ((delta > 0) == positive), alpha=1 - self.alpha)


def top_k_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest entries of a flat tensor, ties at the cut going to the lowest indices.

    The entries the first k of a stable descending sort hold (NaN aside),
    without a sort: every entry above the k-th largest value, then as many of
    those equal to it as are still missing.
    """
    kth = kth_largest(values, k)
    reached = values >= kth
    if int(reached.sum()) == k:  # the usual case: no tie at the cut, no index order needed
        return reached
    above = values > kth
    tied = reached & ~above
    return above | (tied & (tied.cumsum(0) <= k - int(above.sum())))


def kth_largest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest entry of a flat tensor, exactly.

    On a large tensor a random sample (up to SAMPLE entries, an eighth of it at
    most) finds a value that at least k entries reach: a bound below the k-th
    largest, with room to spare. Only the entries at or above it are ranked,
    about 1.5·k plus 200 sampled ranks' worth instead of all n. The sample
    decides how fast, never what: when fewer than k entries reach the bound,
    all of them are ranked.
    """
    n = values.numel()
    size = min(SAMPLE, n // 8)
    if n > SAMPLE_ABOVE and k < n // 4:
        sample = values[torch.randint(n, (size,), generator=torch.Generator().manual_seed(n)).to(values.device)]
        bound = sample.topk(min(size, math.ceil(1.5 * k * size / n) + 200), sorted=False).values.min()
        candidates = values[values >= bound]
        if candidates.numel() >= k:
            return candidates.topk(k, sorted=False).values.min()
    return values.topk(k, sorted=False).values.min()


def kept_positions(n: int, p: float, generator: torch.Generator) -> torch.Tensor:
    """The indices, in order, that keeping each of n entries with probability p keeps.

    The gaps between kept entries of such a draw are independent and geometric
    (failures before a success), so drawing the gaps, floor(log U / log(1−p)),
    gives the same distribution from about p·n random numbers instead of n.
    """
    log_q = math.log1p(-p)
    found, start = [], 0
    while start < n:
        expected = (n - start) * p
        gaps = torch.rand(math.ceil(expected + 6 * math.sqrt(expected) + 16), generator=generator, dtype=torch.float64)
        positions = start - 1 + torch.cumsum(torch.floor(torch.log1p(-gaps) / log_q) + 1, 0).to(torch.int64)
        found.append(positions)
        start = int(positions[-1]) + 1
    kept = torch.cat(found)
    return kept[kept < n]


OPTIMIZERS = {"ondare": OnDAREAdamW, "onties": OnTIESAdamW}
