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
  finds its top k without a full sort (``top_k_indices``: the same entries)
  and merges on the entries its trimmed update keeps.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping

import torch

# Dropout at p up to this draws the kept positions (kept_positions), above it a uniform per entry.
SPARSE_BELOW = 0.1
# OnTIES's top-k on a tensor of more entries than SAMPLE_ABOVE first bounds the k-th largest from a
# sample of SAMPLE of them (top_k_indices): at p = 0.01 the bound lets about 1.3 % of the entries through.
SAMPLE_ABOVE = 100_000
SAMPLE = 10_000


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
        self._scratch: dict[tuple, torch.Tensor] = {}
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
                delta = torch.sqrt(exp_avg_sq, out=self.scratch(p, "update")).add_(group["eps"])
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

                self.update(p, delta, state["tau"])
                self._decay(p, group)
        return loss

    def sparsify_update(self, delta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def update(self, p: torch.Tensor, delta: torch.Tensor, tau: torch.Tensor) -> None:
        """θ += the merged update (α > 0) or the sparsified one."""
        if self.alpha > 0:
            self.merge(p, delta, tau)
        else:
            p.add_(self.sparsify_update(delta))

    def scratch(self, like: torch.Tensor, purpose: str) -> torch.Tensor:
        """A buffer shaped like ``like``, one per purpose, shared by every parameter's step: a fresh tensor
        per parameter and step costs the kernel's page faults on every large one (the embedding's 113 MB)."""
        key = (purpose, like.device, like.dtype)
        if key not in self._scratch:
            size = max(p.numel() for group in self.param_groups for p in group["params"])
            self._scratch[key] = torch.empty(size, device=like.device, dtype=like.dtype)
        return self._scratch[key][: like.numel()].view(like.shape)

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
    """OnTIES: top-p magnitude trimming of τ (once) and of every update, then sign election.

    The trimmed update holds p·n entries, so it stays a list of (index, value): the election, the
    masks and the update touch those entries only, and τ̃'s own entries, not every one of n.
    """

    def __init__(self, *args, **kwargs) -> None:
        # τ̃'s entries by parameter, found once: τ̃ is fixed. Not in the state, which a checkpoint's load
        # would cast to the parameters' dtype, indices included.
        self._tau_entries: dict[torch.Tensor, tuple[torch.Tensor, torch.Tensor]] = {}
        super().__init__(*args, **kwargs)

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._tau_entries.clear()

    def sparsify_reference(self, tau: torch.Tensor) -> torch.Tensor:
        kept = self.top_share(tau.view(-1))
        if kept is None:
            return tau
        trimmed = torch.zeros_like(tau)
        trimmed.view(-1)[kept[0]] = kept[1]
        return trimmed

    def sparsify_update(self, delta: torch.Tensor) -> torch.Tensor:
        return self.sparsify_reference(delta)

    def top_share(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The indices (ascending) and values of the int(p·n) entries of largest magnitude, L1-rescaled if
        asked; None to keep all of them (p = 1, or p·n under 1)."""
        k = int(self.reserve_p * flat.numel())
        if self.reserve_p >= 1 or k < 1:
            return None
        magnitude = torch.abs(flat, out=self.scratch(flat, "magnitude"))
        index = top_k_indices(magnitude, k)
        values = flat[index]
        if self.rescale:
            before = magnitude.sum()
            if before >= 1e-8:
                values.mul_(before / values.abs().sum())
        return index, values

    def update(self, p: torch.Tensor, delta: torch.Tensor, tau: torch.Tensor) -> None:
        kept = self.top_share(delta.view(-1))
        if kept is None:
            super().update(p, delta, tau)
        elif self.alpha == 0:
            p.view(-1).index_add_(0, *kept)
        else:
            self.merge_kept(p, *kept)

    def merge(self, p: torch.Tensor, delta: torch.Tensor, tau: torch.Tensor) -> None:
        """Every entry of Δ kept (p = 1): the election over all of them."""
        positive = (tau + delta) >= 0
        p.add_(tau * ((tau > 0) == positive), alpha=self.alpha)
        p.add_(delta * ((delta > 0) == positive), alpha=1 - self.alpha)

    def merge_kept(self, p: torch.Tensor, index: torch.Tensor, delta: torch.Tensor) -> None:
        """θ += α·τ̃' + (1−α)·Δ̃' where Δ̃ has only the entries ``index`` (values ``delta``).

        Where Δ̃ is 0 the elected sign is τ̃'s own, so τ̃ is kept whole there: α·τ̃ goes in on all of
        τ̃'s entries, and on Δ̃'s, where the two compete, what the election keeps replaces it. The
        elected sign is + where τ̃ + Δ̃ ≥ 0; an entry survives where its own sign is the elected one
        (a zero entry adds nothing either way).
        """
        flat_p, tau = p.view(-1), self.state[p]["tau"].view(-1)
        if p not in self._tau_entries:
            self._tau_entries[p] = _entries(tau)
        tau_index, tau_values = self._tau_entries[p]
        t = tau[index]
        positive = (t + delta) >= 0
        kept_tau = t * ((t > 0) == positive)
        on_delta = delta.mul_((delta > 0) == positive).mul_(1 - self.alpha)
        flat_p.index_add_(0, tau_index, tau_values, alpha=self.alpha)
        flat_p.index_add_(0, index, on_delta.add_(kept_tau.sub_(t), alpha=self.alpha))


def _entries(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The indices and values of a flat tensor's non-zero entries."""
    index = flat.nonzero().flatten()
    return index, flat[index]


def top_k_indices(values: torch.Tensor, k: int) -> torch.Tensor:
    """The indices, ascending, of the k largest entries of a flat tensor, ties at the cut going to the
    lowest indices: the entries the first k of a stable descending sort hold (NaN aside), without a sort.

    On a large tensor a fixed random sample of SAMPLE positions bounds the k-th largest from below: its
    r-th largest, r three standard deviations above the k·s/n entries of the sample expected to reach
    the k-th largest. About (r/s)·n entries reach that bound, and only they are ranked. The sample
    decides how fast, never what: when fewer than k entries reach the bound, all of them are ranked.
    """
    n = values.numel()
    if n > SAMPLE_ABOVE and k < n // 4:
        expected = k * SAMPLE / n
        rank = math.ceil(expected + 3 * math.sqrt(expected) + 4)
        sample = values[_sample_positions(n).to(values.device)]
        bound = sample.topk(rank, sorted=False).values.min()
        candidates = (values >= bound).nonzero().flatten()
        if candidates.numel() >= k:
            return candidates[_top_k_positions(values[candidates], k)]
    return _top_k_positions(values, k)


def _top_k_positions(values: torch.Tensor, k: int) -> torch.Tensor:
    kth = values.topk(k, sorted=False).values.min()
    reached = values >= kth
    if int(reached.sum()) != k:  # a tie at the cut: the lowest indices among the tied
        above = values > kth
        tied = reached & ~above
        reached = above | (tied & (tied.cumsum(0) <= k - int(above.sum())))
    return reached.nonzero().flatten()


@functools.cache
def _sample_positions(n: int) -> torch.Tensor:
    """The same sample of positions for every tensor of n entries (which entries are sampled changes the
    speed, never the result)."""
    return torch.randint(n, (SAMPLE,), generator=torch.Generator().manual_seed(n))


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
