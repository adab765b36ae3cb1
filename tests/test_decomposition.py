"Fast CPU tests for `hybrid_ilrl.decomposition`: bad input is refused clearly, masks are respected, and the hybrid estimator is exactly unbiased."
import pytest, torch
from hybrid_ilrl.objective import TabularLM, token_kl, token_logprob
from hybrid_ilrl.decomposition import (cost_to_go, returns, advantages, pg_surrogate, hybrid_surrogate,
                                       enumerate_groups, expected_grad, exact_grad)

f64 = dict(dtype=torch.float64)

@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    c = torch.randn(4, 5, generator=g, **f64)
    mask = torch.tensor([[0, 1, 1, 1, 1], [0, 1, 1, 0, 0], [0, 0, 1, 1, 1], [0, 1, 0, 0, 0]]).bool()
    R = torch.randn(4, generator=g, **f64)
    return c, mask, R

# --- cost_to_go / returns ---------------------------------------------------------------

def test_cost_to_go_matches_loop_and_ignores_masked_nan(batch):
    c, mask, _ = batch
    c_nan = torch.where(mask, c, float('nan'))
    for inclusive in (False, True):
        ref = torch.tensor([[float(sum(c[i, u] for u in range(t + (not inclusive), 5) if mask[i, u])) if mask[i, t] else 0.
                             for t in range(5)] for i in range(4)], **f64)
        torch.testing.assert_close(cost_to_go(c_nan, mask, inclusive), ref, atol=1e-12, rtol=0)

@pytest.mark.parametrize("args,err,msg", [
    (lambda c, m: (c[:0], None), ValueError, "empty batch"),
    (lambda c, m: (c[0], None), ValueError, "[B, T]"),
    (lambda c, m: (c.long(), None), TypeError, "floating point"),
    (lambda c, m: (c.numpy(), None), TypeError, "torch.Tensor"),
    (lambda c, m: (c, m[:, :4]), ValueError, "mask shape (4, 4)"),
    (lambda c, m: (c, m.long() * 2), ValueError, "0/1"),
    (lambda c, m: (torch.where(m, float('nan'), c), m), ValueError, "NaN or infinite at response position (0, 1)"),
])
def test_cost_to_go_bad_input(batch, args, err, msg):
    c, mask, _ = batch
    with pytest.raises(err, match=msg.replace('(', r'\(').replace(')', r'\)').replace('[', r'\[').replace(']', r'\]')):
        cost_to_go(*args(c, mask))

def test_returns_formula_and_bad_rewards(batch):
    c, mask, R = batch
    G = returns(c, R, mask, beta=0.7, lam=2.0)
    torch.testing.assert_close(G, torch.where(mask, 2.0 * R[:, None] - 0.7 * cost_to_go(c, mask), 0.), atol=1e-12, rtol=0)
    assert not G.requires_grad
    with pytest.raises(ValueError, match=r"R has shape \(3,\)"): returns(c, R[:3], mask)
    with pytest.raises(ValueError, match=r"R has shape \(4, 1\)"): returns(c, R[:, None], mask)
    with pytest.raises(ValueError, match="R contains NaN"): returns(c, torch.full_like(R, float('nan')), mask)
    with pytest.raises(TypeError, match="R must be real"): returns(c, R > 0, mask)

# --- advantages ---------------------------------------------------------------------------

def test_advantages_loo_mean_none(batch):
    c, mask, R = batch
    G = returns(c, R, mask)
    A = advantages(G, mask, 2, 'loo')
    for i in range(4):
        j = i ^ 1  # the other member of the pair
        for t in range(5):
            expect = (G[i, t] - (G[j, t] if mask[j, t] else 0.)) if mask[i, t] else 0.
            assert abs(A[i, t] - expect) < 1e-12
    n = mask.view(2, 2, 5).sum(1, keepdim=True).expand(2, 2, 5).reshape(4, 5).double()
    torch.testing.assert_close(advantages(G, mask, 2, 'mean'), torch.where(mask, (n - 1) / n.clamp(min=1) * A, 0.), atol=1e-12, rtol=0)
    assert torch.equal(advantages(G, mask, 1, 'none'), G)

@pytest.mark.parametrize("kw,msg", [
    (dict(group_size=3), "group_size=3 does not divide the batch size B=4"),
    (dict(group_size=0), "positive int"),
    (dict(group_size=2.0), "positive int"),
    (dict(group_size=1, baseline='loo'), "needs at least 2 responses"),
    (dict(group_size=1, baseline='mean'), "needs at least 2 responses"),
    (dict(group_size=2, baseline='median'), "baseline must be"),
])
def test_advantages_bad_group(batch, kw, msg):
    c, mask, R = batch
    with pytest.raises(ValueError, match=msg): advantages(returns(c, R, mask), mask, **kw)

def test_advantages_empty_and_shape(batch):
    c, mask, R = batch
    with pytest.raises(ValueError, match="empty batch"): advantages(c[:0], None, 2)
    with pytest.raises(ValueError, match="mask shape"): advantages(c, mask[:2], 2)

# --- surrogates -----------------------------------------------------------------------------

def test_surrogates_value_mask_and_errors(batch):
    _, mask, _ = batch
    g = torch.Generator().manual_seed(1)
    z = torch.randn(4, 5, 6, generator=g, **f64).requires_grad_()
    z_E, y = torch.randn(4, 5, 6, generator=g, **f64), torch.randint(0, 6, (4, 5), generator=g)
    lp, k = token_logprob(z, y), token_kl(z, z_E)
    A = torch.randn(4, 5, generator=g, **f64).requires_grad_()
    s = hybrid_surrogate(lp, k, A, mask, beta=0.7)
    torch.testing.assert_close(s, ((0.7 * k - lp * A) * mask).sum(-1).mean(), atol=1e-12, rtol=0)
    # garbage (NaN, inf, huge values depending on z) at masked positions contributes nothing, not even to the gradient
    g_ok = torch.autograd.grad(s, z, retain_graph=True)[0]
    bad = lambda t, v: torch.where(mask, t, v)
    s_bad = hybrid_surrogate(bad(lp, 1e6 * z.sum(-1)), bad(k, float('nan')), bad(A, float('inf')), mask, beta=0.7)
    torch.testing.assert_close(torch.autograd.grad(s_bad, z, retain_graph=True)[0], g_ok, atol=1e-12, rtol=0)
    assert g_ok[~mask].abs().max() == 0
    assert torch.autograd.grad(pg_surrogate(lp, A, mask), A, allow_unused=True)[0] is None  # advantage is stop-gradient
    assert pg_surrogate(lp, A, mask, reduction='none').shape == (4,)
    with pytest.raises(ValueError, match=r"shape mismatch: k has shape \(4, 4\)"): hybrid_surrogate(lp, k[:, :4], A, mask)
    with pytest.raises(ValueError, match=r"shape mismatch: A has shape \(3, 5\)"): pg_surrogate(lp, A[:3], mask)
    with pytest.raises(ValueError, match="k \\(the token KLs\\) is needed"): hybrid_surrogate(lp, None, A, mask, beta=1.0)
    with pytest.raises(ValueError, match="reduction must be"): pg_surrogate(lp, A, mask, reduction='avg')
    with pytest.raises(ValueError, match="empty batch"): pg_surrogate(lp[:0], A[:0])
    with pytest.raises(ValueError, match="A is NaN or infinite"): pg_surrogate(lp, bad(A, float('nan')))
    hybrid_surrogate(lp, None, A, mask, beta=0.0)  # pure RL needs no teacher

# --- exactness ----------------------------------------------------------------------------

@pytest.mark.parametrize("cost", ['c', 'k'])
@pytest.mark.parametrize("beta,lam", [(0.7, 2.0), (0.0, 1.0), (1.0, 0.0)])
def test_hybrid_estimator_is_exactly_unbiased(cost, beta, lam):
    g = torch.Generator().manual_seed(3)
    student, teacher = TabularLM(2, 2, 3, generator=g), TabularLM(2, 2, 3, generator=g)
    R = torch.rand(2, 8, generator=g, **f64)
    def s(b):
        A = advantages(returns(b.c if cost == 'c' else b.k, b.R, b.mask, beta, lam), b.mask, b.group_size, 'loo')
        return hybrid_surrogate(b.logp, b.k, A, b.mask, beta, reduction='none')
    g_ref = exact_grad(student, teacher, R, beta, lam)
    torch.testing.assert_close(expected_grad(student, teacher, R, s, group_size=2), g_ref, atol=1e-10, rtol=0)
    # the biased group mean is caught: dense + (G-1)/G sparse
    def s_mean(b):
        A = advantages(returns(b.k, b.R, b.mask, beta, lam), b.mask, b.group_size, 'mean')
        return hybrid_surrogate(b.logp, b.k, A, b.mask, beta, reduction='none')
    dense = beta * expected_grad(student, teacher, R, lambda b: b.k.sum(-1))
    torch.testing.assert_close(expected_grad(student, teacher, R, s_mean, group_size=2), dense + 0.5 * (g_ref - dense), atol=1e-10, rtol=0)

def test_enumerate_groups_weights_and_errors():
    g = torch.Generator().manual_seed(4)
    student, teacher = TabularLM(2, 2, 2, generator=g), TabularLM(2, 2, 2, generator=g)
    R = torch.rand(2, 4, generator=g, **f64)
    b = enumerate_groups(student, teacher, R, group_size=3)
    assert b.x.shape == (2 * 4**3 * 3,)
    torch.testing.assert_close(b.weight.sum(), torch.tensor(1.0, **f64), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="reward table shape"): enumerate_groups(student, teacher, R[:, :3])
    with pytest.raises(ValueError, match="group_size"): enumerate_groups(student, teacher, R, group_size=0)
    with pytest.raises(ValueError, match="one value per response"): expected_grad(student, teacher, R, lambda b: b.k)
