"""OnDARE and OnTIES (METHODS.md §5) against AdamW and against the merge formulas, computed here by hand.

The base update Δ is HF's AdamW (bias corrections folded into the step size,
eps added to the uncorrected √v, decoupled weight decay after the update);
``hf_adamw_updates`` below writes it out independently of the optimizer.
"""

from __future__ import annotations

import math

import pytest
import torch

from pipeline_lib.training.merging import SAMPLE_ABOVE, SPARSE_BELOW, OnDAREAdamW, OnTIESAdamW, kept_positions, top_k_indices

LR, BETAS, EPS = 1e-2, (0.9, 0.999), 1e-8


def make_params(shapes, dtype=torch.float32, seed=0) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=generator, dtype=dtype)) for shape in shapes]


def random_grads(params, steps: int, seed: int = 1) -> list[list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(p.shape, generator=generator, dtype=p.dtype) for p in params] for _ in range(steps)]


def clone_params(params) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


def hf_adamw_updates(grads: list[torch.Tensor], lr: float = LR, betas=BETAS, eps: float = EPS) -> list[torch.Tensor]:
    """Δ of each step for one parameter with these gradients, HF-style (no weight decay in Δ)."""
    beta1, beta2 = betas
    m = torch.zeros_like(grads[0])
    v = torch.zeros_like(grads[0])
    updates = []
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        step_size = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
        updates.append(-step_size * m / (v.sqrt() + eps))
    return updates


def run_steps(optimizer, params, grads_per_step, after_step=None) -> None:
    for step, grads in enumerate(grads_per_step):
        before = [p.detach().clone() for p in params]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
        if after_step is not None:
            after_step(step, before, params)


SHAPES = [(7, 5), (11,), (3, 4, 2)]


def hf_adamw_trajectory(start: torch.Tensor, grads: list[torch.Tensor], lr: float, weight_decay: float):
    """θ after each step of HF-style AdamW: θ ← (θ + Δ)·(1 − lr·wd), weight decay after the update."""
    theta, trajectory = start.clone(), []
    for delta in hf_adamw_updates(grads, lr=lr):
        theta = (theta + delta) * (1 - lr * weight_decay)
        trajectory.append(theta)
    return trajectory


@pytest.mark.parametrize("cls", [OnDAREAdamW, OnTIESAdamW])
@pytest.mark.parametrize("merge_every", [1, 3])
def test_p1_alpha0_is_the_reference_hf_adamw(cls, merge_every: int) -> None:
    """With p = 1 and α = 0 (merging off) both optimizers are the reference code's HF-style AdamW, also
    when merging every K steps. That is not ``torch.optim.AdamW`` where gradients are tiny: HF adds eps
    to the uncorrected √v (at step 1 √(1−β2)·|g| ≈ 3e-8 for |g| = 1e-6, against eps = 1e-8), torch to
    the bias-corrected √v̂ (≈ 1e-6). Half of every tensor's gradient entries are ≈ 1e-6 here.
    """
    steps, weight_decay, lr = 7, 0.01, 1e-3
    generator = torch.Generator().manual_seed(5)
    params = make_params(SHAPES, dtype=torch.float64, seed=5)
    start = [p.detach().clone() for p in params]
    tiny = [torch.rand(p.shape, generator=generator) < 0.5 for p in params]
    scales = [torch.where(t, 1e-6, 1.0).to(torch.float64) for t in tiny]
    grads = [random_grads(params, 1, seed=step)[0] for step in range(steps)]
    grads = [[g * c for g, c in zip(step_grads, scales, strict=True)] for step_grads in grads]
    deltas = {id(p): 0.05 * torch.randn(p.shape, generator=generator, dtype=p.dtype) for p in params}
    ours = cls(params, lr=lr, betas=BETAS, eps=EPS, weight_decay=weight_decay, deltas=deltas,
               reserve_p=1.0, alpha=0.0, merge_every=merge_every)
    expected = [hf_adamw_trajectory(s, [g[i] for g in grads], lr, weight_decay) for i, s in enumerate(start)]
    for step, step_grads in enumerate(grads):
        before = [p.detach().clone() for p in params]
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        ours.step()
        for index, p in enumerate(params):
            torch.testing.assert_close(p.detach(), expected[index][step], rtol=1e-12, atol=1e-15,
                                       msg=lambda m, i=index, s=step: f"parameter {i}, step {s + 1}: {m}")
            # Every entry moves on every step: the reference code's merge_every bug
            # updated only the first parameter on the steps between merges.
            assert (p.detach() != before[index]).all(), f"parameter {index}, step {step + 1}"

    # torch's AdamW takes the same first step where gradients are of ordinary size (to 2e-5 here), and a
    # larger one where they are tiny (here by 17 % at least, and more the smaller the gradient).
    torch_params = clone_params(start)
    torch_adamw = torch.optim.AdamW(torch_params, lr=lr, betas=BETAS, eps=EPS, weight_decay=weight_decay)
    for q, g in zip(torch_params, grads[0], strict=True):
        q.grad = g.clone()
    torch_adamw.step()
    for q, s, trajectory, t in zip(torch_params, start, expected, tiny, strict=True):
        hf_step, torch_step = trajectory[0] - s, q.detach() - s
        off = (torch_step.abs() - hf_step.abs()) / hf_step.abs()
        assert off[~t].abs().max() < 1e-3
        assert off[t].min() > 0.1


def test_ondare_reference_is_dropped_and_rescaled_once_then_clipped() -> None:
    p_keep = 0.5
    n = 4000
    generator = torch.Generator().manual_seed(3)
    small = 0.1 * torch.rand(n, generator=generator, dtype=torch.float64) + 0.01  # |τ/p| ≤ 0.22 < 1: no clipping
    small = small * torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0).to(torch.float64)
    large = 5.0 * torch.randn(n, generator=generator, dtype=torch.float64)
    params = make_params([(n,), (n,)], dtype=torch.float64)
    opt = OnDAREAdamW(params, lr=LR, deltas={id(params[0]): small, id(params[1]): large}, reserve_p=p_keep, alpha=1e-3)

    tau = opt.state[params[0]]["tau"]
    kept = tau != 0
    assert 0.45 < kept.double().mean() < 0.55
    torch.testing.assert_close(tau[kept], small[kept] / p_keep, rtol=1e-12, atol=0)
    assert (tau[~kept] == 0).all()

    tau = opt.state[params[1]]["tau"]
    kept = tau != 0
    assert 0.45 < kept.double().mean() < 0.55
    torch.testing.assert_close(tau[kept], (large[kept] / p_keep).clamp(-1, 1), rtol=1e-12, atol=0)
    # The clip really bit (and in both directions), and nothing exceeds it.
    assert (tau == 1).sum() > 100 and (tau == -1).sum() > 100 and tau.abs().max() == 1.0
    # The given τ tensors are not modified in place.
    assert (small != 0).all() and (large.abs() > 1).sum() > 100

    # Drawn once: steps do not redraw τ's mask.
    stored = [opt.state[p]["tau"].clone() for p in params]
    run_steps(opt, params, random_grads(params, 2))
    for p, s in zip(params, stored, strict=True):
        assert torch.equal(opt.state[p]["tau"], s)


# p = 0.5 draws a uniform per entry; p = 0.05 draws the kept positions (SPARSE_BELOW).
@pytest.mark.parametrize(("p_keep", "n"), [(0.5, 3000), (0.05, 40_000)], ids=["dense-mask", "kept-positions"])
def test_ondare_update_survivors_are_scaled_by_one_over_p(p_keep: float, n: int) -> None:
    """α = 0: each step's change is entrywise 0 or Δ/p, with a fresh mask each step."""
    steps = 3
    spread = 5 * math.sqrt(p_keep * (1 - p_keep) / n)  # five standard errors of the kept share
    params = make_params([(n,)], dtype=torch.float64)
    tau = torch.full((n,), 0.01, dtype=torch.float64)
    opt = OnDAREAdamW(params, lr=LR, deltas={id(params[0]): tau}, reserve_p=p_keep, alpha=0.0, seed=7)
    grads = random_grads(params, steps)
    expected = hf_adamw_updates([g[0] for g in grads])
    masks = []

    def check(step, before, current):
        change = current[0].detach() - before[0]
        kept = change != 0
        masks.append(kept)
        assert abs(kept.double().mean() - p_keep) < spread
        torch.testing.assert_close(change[kept], expected[step][kept] / p_keep, rtol=1e-9, atol=1e-15)
        # Non-vacuous: Δ itself has no zero entries, so a zero change means dropped.
        assert (expected[step] != 0).all()

    run_steps(opt, params, grads, check)
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(masks[1], masks[2])


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_ondare_alpha_merges_the_clipped_reference_every_step(weight_decay: float) -> None:
    """p = 1, α > 0: θ ← (θ + α·τ̃ + (1−α)·Δ)·(1 − lr·wd), τ̃ = clip(τ, −1, 1)."""
    alpha, steps = 0.3, 4
    params = make_params([(6, 5), (9,)], dtype=torch.float64)
    generator = torch.Generator().manual_seed(11)
    taus = [2.0 * torch.randn(p.shape, generator=generator, dtype=torch.float64) for p in params]
    assert any((t.abs() > 1).any() for t in taus)  # the clip matters in this test
    opt = OnDAREAdamW(params, lr=LR, weight_decay=weight_decay, deltas={id(p): t for p, t in zip(params, taus)},
                      reserve_p=1.0, alpha=alpha)
    grads = random_grads(params, steps)
    updates = [hf_adamw_updates([g[i] for g in grads]) for i in range(len(params))]
    theta = [p.detach().clone() for p in params]
    run_steps(opt, params, grads)
    for i, p in enumerate(params):
        for step in range(steps):
            theta[i] = (theta[i] + alpha * taus[i].clamp(-1, 1) + (1 - alpha) * updates[i][step]) * (
                1 - LR * weight_decay
            )
        torch.testing.assert_close(p.detach(), theta[i], rtol=1e-10, atol=1e-12)


def first_step_update(g: torch.Tensor, lr: float = LR) -> torch.Tensor:
    """HF AdamW's first Δ, with the optimizer's own operation order (so ties below are exact)."""
    beta1, beta2 = BETAS
    exp_avg = torch.zeros_like(g).mul_(beta1).add_(g, alpha=1 - beta1)
    exp_avg_sq = torch.zeros_like(g).mul_(beta2).addcmul_(g, g, value=1 - beta2)
    step_size = lr * math.sqrt(1 - beta2) / (1 - beta1)
    return exp_avg / exp_avg_sq.sqrt().add_(EPS) * -step_size


def test_onties_elects_signs_and_drops_disagreeing_entries() -> None:
    """p = 1 (no trimming), α = 0.3, first step: Δ ≈ −lr·sign(g), τ chosen around it."""
    alpha = 0.3
    g = torch.tensor([1.0, -1.0, -1.0, -1.0, 1.0, 1.0, 0.0, 0.0, 2.0, 1.0], dtype=torch.float64)
    delta = first_step_update(g)
    # Sanity of the hand computation: Δ ≈ −lr·sign(g) on the first step (eps makes it a hair smaller).
    torch.testing.assert_close(delta, -LR * g.sign(), rtol=1e-6, atol=0)
    tau = torch.tensor(
        [
            -0.5 * LR,  # Δ = −lr, τ = −0.5lr: elected −, both kept
            0.5 * LR,  # Δ = +lr > τ: elected +, both kept
            -3 * LR,  # Δ = +lr, τ = −3lr: elected −, Δ dropped
            3 * LR,  # Δ = +lr, τ = +3lr: both kept
            2 * LR,  # Δ = −lr, τ = +2lr: elected +, Δ dropped
            0.0,  # τ = 0: its sign (0) never matches, Δ (−) elected and kept
            -0.2,  # Δ = 0: elected −, τ kept, Δ contributes 0
            0.0,  # both 0: nothing moves (but weight decay is 0 here)
            0.0,  # set below to −Δ exactly: τ + Δ = 0 counts as +, so τ (+) kept, Δ (−) dropped
            0.5 * LR,  # Δ = −lr, τ = +0.5lr: elected −, τ dropped
        ],
        dtype=torch.float64,
    )
    tau[8] = -delta[8]
    assert tau[8] + delta[8] == 0 and tau[8] > 0
    theta0 = torch.linspace(-1, 1, 10, dtype=torch.float64)
    param = torch.nn.Parameter(theta0.clone())
    opt = OnTIESAdamW([param], lr=LR, deltas={id(param): tau}, reserve_p=1.0, alpha=alpha)
    assert torch.equal(opt.state[param]["tau"], tau)  # p = 1: τ̃ = τ, no clipping for OnTIES
    param.grad = g.clone()
    opt.step()

    elected = torch.tensor([1.0 if x >= 0 else -1.0 for x in (tau + delta).tolist()], dtype=torch.float64)
    tau_kept = torch.where(torch.sign(tau) == elected, tau, 0.0)
    delta_kept = torch.where(torch.sign(delta) == elected, delta, 0.0)
    expected = theta0 + alpha * tau_kept + (1 - alpha) * delta_kept
    torch.testing.assert_close(param.detach(), expected, rtol=0, atol=1e-15)

    # The same expectation spelled out entry by entry, so each case above is pinned.
    keeps = [(True, True), (True, True), (True, False), (True, True), (True, False),
             (False, True), (True, False), (False, False), (True, False), (False, True)]  # fmt: skip
    for i, (keep_tau, keep_delta) in enumerate(keeps):
        value = theta0[i] + alpha * tau[i] * keep_tau + (1 - alpha) * delta[i] * keep_delta
        assert abs(param[i].item() - value.item()) < 1e-15, f"entry {i}"


def test_onties_trims_reference_to_the_top_share_once() -> None:
    n = 101
    generator = torch.Generator().manual_seed(2)
    tau = torch.randn(n, generator=generator, dtype=torch.float64) * 3  # some |τ| > 1: OnTIES does not clip
    params = make_params([(n,), (4, 5)], dtype=torch.float64)
    tau2 = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    opt = OnTIESAdamW(params, lr=LR, deltas={id(params[0]): tau, id(params[1]): tau2}, reserve_p=0.5, alpha=0.1)
    for p, original in ((params[0], tau), (params[1], tau2)):
        stored = opt.state[p]["tau"]
        k = int(0.5 * original.numel())
        top = original.abs().flatten().argsort(descending=True)[:k]
        expected = torch.zeros_like(original).flatten()
        expected[top] = original.flatten()[top]
        assert torch.equal(stored, expected.view_as(original))
        assert int((stored != 0).sum()) == k
    assert opt.state[params[0]]["tau"].abs().max() > 1


def stable_top_k(values: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of the first k entries of a stable descending sort of |values| (the reference code's selection)."""
    mask = torch.zeros(values.numel(), dtype=torch.bool)
    mask[values.abs().flatten().argsort(descending=True, stable=True)[:k]] = True
    return mask.view_as(values)


def test_onties_breaks_ties_at_the_cut_towards_lower_indices() -> None:
    # |τ| in row-major order: six 3s, fifteen 2s, three 1s. The top half (12) is the six 3s and the six
    # 2s of lowest index; the other nine 2s tie with them.
    magnitudes = torch.tensor([2.0, 3, 2, 1, 2, 3, 2, 2] * 3).view(4, 6)
    tau = magnitudes * torch.where(torch.arange(24).view(4, 6) % 3 == 0, -1.0, 1.0)
    param = torch.nn.Parameter(torch.zeros(4, 6))
    opt = OnTIESAdamW([param], lr=LR, deltas={id(param): tau}, reserve_p=0.5, alpha=0.1)
    kept = opt.state[param]["tau"] != 0
    threes, first_twos = [1, 5, 9, 13, 17, 21], [0, 2, 4, 6, 7, 8]
    assert kept.flatten().nonzero().flatten().tolist() == sorted(threes + first_twos)
    assert torch.equal(kept, stable_top_k(tau, 12))
    assert torch.equal(opt.state[param]["tau"][kept], tau[kept])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_onties_first_step_keeps_the_stable_sort_selection(dtype) -> None:
    """At Adam's first step |Δ| ≈ lr for every entry: many entries tie at the top-k cut, in fp32 and bf16."""
    generator = torch.Generator().manual_seed(4)
    g = torch.randn(64, 96, generator=generator).to(dtype)
    delta = first_step_update(g)
    k = int(0.01 * delta.numel())
    kth = delta.abs().flatten().topk(k).values.min()
    above, tied = int((delta.abs() > kth).sum()), int((delta.abs() == kth).sum())
    assert tied > k - above + 10  # the cut falls inside a long run of ties

    param = torch.nn.Parameter(torch.zeros(64, 96, dtype=dtype))
    opt = OnTIESAdamW([param], lr=LR, deltas={id(param): torch.zeros(64, 96)}, reserve_p=0.01, alpha=0.0)
    param.grad = g.clone()
    opt.step()
    kept = param.detach() != 0
    assert torch.equal(kept, stable_top_k(delta, k))
    assert torch.equal(param.detach()[kept], delta[kept])


def test_onties_trims_each_update_then_elects() -> None:
    """p = 0.5, α = 0.2 over several steps: Δ̃ = top half of |Δ|, then the sign election, against a hand loop."""
    p_keep, alpha, steps, n = 0.5, 0.2, 4, 40
    params = make_params([(n,)], dtype=torch.float64)
    generator = torch.Generator().manual_seed(9)
    tau = 0.02 * torch.randn(n, generator=generator, dtype=torch.float64)
    opt = OnTIESAdamW(params, lr=LR, deltas={id(params[0]): tau}, reserve_p=p_keep, alpha=alpha)
    # Gradients of varied scale so |Δ| has no near-ties after the first step.
    grads = [[g[0] * torch.linspace(0.1, 3, n, dtype=torch.float64)] for g in random_grads(params, steps)]
    updates = hf_adamw_updates([g[0] for g in grads])
    k = int(p_keep * n)
    tau_trim = torch.zeros(n, dtype=torch.float64)
    top = tau.abs().argsort(descending=True)[:k]
    tau_trim[top] = tau[top]
    theta = params[0].detach().clone()
    dropped_some = False
    for step in range(steps):
        delta = updates[step]
        delta_trim = torch.zeros(n, dtype=torch.float64)
        top = delta.abs().argsort(descending=True)[:k]
        delta_trim[top] = delta[top]
        total = [t + d for t, d in zip(tau_trim.tolist(), delta_trim.tolist(), strict=True)]
        elected = [1.0 if x >= 0 else -1.0 for x in total]
        for i in range(n):
            keep_tau = math.copysign(1, tau_trim[i].item()) == elected[i] and tau_trim[i] != 0
            keep_delta = math.copysign(1, delta_trim[i].item()) == elected[i] and delta_trim[i] != 0
            dropped_some |= (delta_trim[i] != 0) and not keep_delta
            theta[i] += alpha * tau_trim[i] * keep_tau + (1 - alpha) * delta_trim[i] * keep_delta
    run_steps(opt, params, grads)
    assert dropped_some  # the election really removed some update entries
    torch.testing.assert_close(params[0].detach(), theta, rtol=0, atol=1e-13)


def test_constructor_refuses_bad_settings() -> None:
    params = make_params([(3,)])
    deltas = {id(params[0]): torch.zeros(3)}
    for bad in ({"reserve_p": 0.0}, {"reserve_p": 1.5}, {"alpha": 1.0}, {"alpha": -0.1}, {"merge_every": 0}):
        with pytest.raises(ValueError):
            OnDAREAdamW(params, deltas=deltas, **bad)
    with pytest.raises(ValueError, match="no reference delta"):
        OnTIESAdamW(params, deltas={})
    with pytest.raises(ValueError, match="shape"):
        OnTIESAdamW(params, deltas={id(params[0]): torch.zeros(4)})


def test_kept_positions_are_an_independent_keep_with_probability_p() -> None:
    assert SPARSE_BELOW >= 0.05
    n, p = 1_000_000, 0.01
    kept = kept_positions(n, p, torch.Generator().manual_seed(0))
    assert kept.dtype == torch.int64 and kept.min() >= 0 and kept.max() < n
    assert (kept.diff() > 0).all(), "in order, no index twice"
    expected, sd = n * p, math.sqrt(n * p * (1 - p))
    assert abs(len(kept) - expected) < 5 * sd
    # Spread evenly: each tenth of the range holds its share.
    per_tenth = torch.bincount(kept // (n // 10), minlength=10)
    assert ((per_tenth - expected / 10).abs() < 5 * sd / math.sqrt(10)).all(), per_tenth
    # Independent entries: the gaps are geometric, mean (1 − p)/p, and a run of dropped entries is as
    # likely after a kept entry as anywhere (no gap shorter or longer than chance allows).
    gaps = (kept.diff() - 1).double()
    assert abs(gaps.mean() - (1 - p) / p) < 5 * math.sqrt(1 - p) / p / math.sqrt(len(gaps))
    assert abs((gaps == 0).double().mean() - p) < 5 * math.sqrt(p / len(gaps))
    # Seeded: the same generator state draws the same positions.
    assert torch.equal(kept, kept_positions(n, p, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "tied-at-the-cut"])
def test_top_k_on_a_large_tensor_is_the_stable_sort_selection(ties: bool) -> None:
    # Above SAMPLE_ABOVE entries the k-th largest is bounded from a sample first; the selection must not change.
    n, k = 1_500_000, 15_000
    assert n > SAMPLE_ABOVE
    values = torch.rand(n, generator=torch.Generator().manual_seed(8))
    if ties:
        cut = values.topk(k).values.min()
        values[(values - cut).abs() < 2e-4] = cut  # a few hundred entries share the k-th value
        assert int((values == cut).sum()) > 100
    assert torch.equal(top_k_indices(values, k), stable_top_k(values, k).nonzero().flatten())


@pytest.mark.parametrize("alpha", [0.0, 0.2])
def test_onties_rescale_gives_the_trimmed_update_the_whole_updates_l1(alpha: float) -> None:
    n, p_keep = 40, 0.25
    params = make_params([(n,)], dtype=torch.float64)
    deltas = {id(params[0]): torch.zeros(n)}
    opt = OnTIESAdamW(params, lr=LR, deltas=deltas, reserve_p=p_keep, alpha=alpha, rescale=True)
    noise = torch.randn(n, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    g = torch.linspace(0.1, 3, n, dtype=torch.float64) * noise
    delta = hf_adamw_updates([g])[0]
    before = params[0].detach().clone()
    params[0].grad = g.clone()
    opt.step()
    # With τ = 0 the election keeps every entry of Δ̃: the change is (1 − α)·Δ̃, scaled to Δ's L1.
    top = delta.abs().argsort(descending=True)[: int(p_keep * n)]
    expected = torch.zeros(n, dtype=torch.float64)
    expected[top] = delta[top] * delta.abs().sum() / delta[top].abs().sum()
    torch.testing.assert_close(params[0].detach() - before, (1 - alpha) * expected, rtol=1e-10, atol=1e-15)


def test_top_k_is_exact_when_the_sample_overestimates_the_cut() -> None:
    """A sample holding only the largest entries sets a bound fewer than k reach: all entries are ranked."""
    from pipeline_lib.training import merging

    n, k = 200_000, 20_000
    values = torch.rand(n, generator=torch.Generator().manual_seed(5))
    values[merging._sample_positions(n)] = 2.0
    assert int((values == 2.0).sum()) < k
    assert torch.equal(top_k_indices(values, k), stable_top_k(values, k).nonzero().flatten())


def test_onties_resumed_from_its_state_dict_steps_as_if_never_stopped() -> None:
    """A checkpoint's optimizer state, loaded into a new optimizer, gives the same next steps (the trainer's resume)."""
    shapes = [(300, 400), (17,)]  # one tensor above SAMPLE_ABOVE: the sampled top-k
    assert 300 * 400 > SAMPLE_ABOVE
    generator = torch.Generator().manual_seed(6)
    taus = [0.02 * torch.randn(shape, generator=generator) for shape in shapes]
    grads = random_grads(make_params(shapes), steps=4)

    def optimizer(params):
        deltas = {id(p): t for p, t in zip(params, taus, strict=True)}
        return OnTIESAdamW(params, lr=LR, deltas=deltas, reserve_p=0.05, alpha=0.3)

    straight = make_params(shapes)
    run_steps(optimizer(straight), straight, grads)

    first = make_params(shapes)
    stopped = optimizer(first)
    run_steps(stopped, first, grads[:2])
    saved = stopped.state_dict()
    resumed_params = clone_params(first)
    resumed = optimizer(resumed_params)
    resumed.load_state_dict(saved)
    run_steps(resumed, resumed_params, grads[2:])
    for a, b in zip(straight, resumed_params, strict=True):
        assert torch.equal(a.detach(), b.detach())
