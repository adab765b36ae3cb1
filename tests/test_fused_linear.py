"""`fused_linear_hybrid_loss` (the hybrid loss fused with the LM head) against float64 autograd through the unfused path
`z = h Wᵀ + b` → `hybrid_logit_grad`: loss, dh, dW, db and statistics, over chunk sizes, teachers, options, dtypes."""
import pytest, torch

from hybrid_ilrl.fused_linear import fused_linear_hybrid_loss, unfused_reference, default_chunk_size, bf16_fused_error
from hybrid_ilrl.kernel import hybrid_loss

torch.set_num_threads(1)
F64 = dict(rtol=1e-9, atol=1e-12)
F32 = dict(rtol=1e-4, atol=1e-5)

def toy(N=37, d=16, V=50, Vpad=0, dtype=torch.float64, seed=0, teacher='head', bias=False, shape=None):
    g = torch.Generator().manual_seed(seed)
    h, W = torch.randn(N, d, generator=g, dtype=dtype), torch.randn(V + Vpad, d, generator=g, dtype=dtype) / d ** 0.5
    h_E, W_E = h + 0.3 * torch.randn(N, d, generator=g, dtype=dtype), W + 0.2 * torch.randn(V + Vpad, d, generator=g, dtype=dtype)
    y, A = torch.randint(0, V, (N,), generator=g), torch.randn(N, generator=g, dtype=dtype)
    mask = torch.rand(N, generator=g) > 0.2
    kw = dict(h_E=h_E, W_E=W_E) if teacher == 'head' else dict(z_E=h_E @ W_E[:V].T) if teacher == 'logits' else {}
    if bias: kw['bias'] = 0.5 * torch.randn(V + Vpad, generator=g, dtype=dtype)
    if shape:
        h, y, A, mask = h.view(*shape, d), y.view(shape), A.view(shape), mask.view(shape)
        kw = {k: (v.view(*shape, -1) if k in ('h_E', 'z_E') else v) for k, v in kw.items()}
    return h, W, y, A, mask, kw

def check(h, W, y, A, mask, kw, tol=F64, **opts):
    ref_opts = {k: v for k, v in opts.items() if k in ('beta', 'tau', 'normalize', 'n_vocab')}
    loss_ref, dh_ref, dW_ref, db_ref, rows = unfused_reference(h.double(), W.double(), y, A.double(), mask,
        **{k: (v.double() if torch.is_tensor(v) else v) for k, v in kw.items()}, **ref_opts)
    h1, W1 = h.detach().requires_grad_(), W.detach().requires_grad_()
    kw1 = dict(kw)
    if 'bias' in kw1: kw1['bias'] = kw1['bias'].detach().requires_grad_()
    loss, st = fused_linear_hybrid_loss(h1, W1, y, A, mask, **kw1, **opts)
    (2.5 * loss).backward()                          # backward scales by grad_output
    torch.testing.assert_close(loss.double(), loss_ref, **tol)
    torch.testing.assert_close(h1.grad.double(), 2.5 * dh_ref, **tol)
    torch.testing.assert_close(W1.grad.double(), 2.5 * dW_ref, **tol)
    if 'bias' in kw1: torch.testing.assert_close(kw1['bias'].grad.double(), 2.5 * db_ref, **tol)
    for name in ('k', 'logp', 'logq', 'entropy'):
        torch.testing.assert_close(getattr(st, name).double(), getattr(rows, name), **tol)
    return h1.grad, W1.grad

@pytest.mark.parametrize('C', [1, 5, 8, 37, 64, None])
def test_chunk_sizes(C):
    h, W, y, A, mask, kw = toy()
    assert not mask.all()
    check(h, W, y, A, mask, kw, chunk_size=C)

@pytest.mark.parametrize('opts', [dict(tau=0.7, beta=0.4), dict(beta=0.0), dict(tau=2.0, normalize='none')])
@pytest.mark.parametrize('teacher', ['head', 'logits'])
def test_options(opts, teacher):
    check(*toy(teacher=teacher), chunk_size=6, **opts)

def test_no_teacher_bias_sequence_norm():
    check(*toy(teacher=None), chunk_size=6, beta=0.0)
    check(*toy(bias=True), chunk_size=9)
    check(*toy(N=36, shape=(4, 9)), chunk_size=7, normalize='sequence')

def test_padded_vocab():
    h, W, y, A, mask, kw = toy(Vpad=6, bias=True)
    _, dW = check(h, W, y, A, mask, kw, chunk_size=10, n_vocab=50)
    assert dW.shape == W.shape and dW[50:].abs().max() == 0

@pytest.mark.parametrize('backend', ['cpu', 'torch'])
def test_fp32_backends(backend):
    h, W, y, A, mask, kw = toy(N=64, d=32, V=300, seed=1, dtype=torch.float32)
    check(h, W, y, A, mask, kw, tol=F32, chunk_size=24, backend=backend)

def test_matches_unfused_hybrid_loss_fp32():
    "Same loss and gradients as what the trainer did before: `hybrid_loss(h @ W.T, z_E, ...)` with autograd through the matmul."
    h, W, y, A, mask, kw = toy(N=40, d=24, V=500, seed=2, dtype=torch.float32, shape=(5, 8), teacher='logits')
    h1, W1, h2, W2 = (t.detach().clone().requires_grad_() for t in (h, W, h, W))
    l1, s1 = hybrid_loss(h1 @ W1.T, kw['z_E'], y, A, mask, beta=0.7, tau=0.9, normalize='sequence')
    l1.backward()
    l2, s2 = fused_linear_hybrid_loss(h2, W2, y, A, mask, beta=0.7, tau=0.9, normalize='sequence', z_E=kw['z_E'], chunk_size=7)
    l2.backward()
    torch.testing.assert_close(l2, l1, **F32)
    torch.testing.assert_close(h2.grad, h1.grad, **F32); torch.testing.assert_close(W2.grad, W1.grad, **F32)
    for a, b in zip(s2, s1): torch.testing.assert_close(a, b, **F32)

def test_no_grad_stats_only():
    h, W, y, A, mask, kw = toy(dtype=torch.float32)
    with torch.no_grad(): loss, st = fused_linear_hybrid_loss(h, W, y, A, mask, **kw, chunk_size=8)
    _, _, _, _, rows = unfused_reference(h.double(), W.double(), y, A.double(), mask, h_E=kw['h_E'].double(), W_E=kw['W_E'].double())
    torch.testing.assert_close(st.k.double(), rows.k, **F32)
    assert not loss.requires_grad

def test_bf16_error():
    err = bf16_fused_error(N=128, d=32, V=1000)
    assert err['loss'] < 1e-5 and err['dh'] < 1e-2 and err['dW'] < 1e-2, err

def test_default_chunk():
    assert default_chunk_size(8192, 512, 32000) == 256 and default_chunk_size(5, 64, 16) == 5 and default_chunk_size(3, 4, 10**6) == 1

@pytest.mark.parametrize('bad, msg', [
    (lambda h, W, y, A, kw: fused_linear_hybrid_loss(h, W[:, :5], y, A, **kw), 'hidden size mismatch'),
    (lambda h, W, y, A, kw: fused_linear_hybrid_loss(h, W.double(), y, A, **kw), 'dtype mismatch'),
    (lambda h, W, y, A, kw: fused_linear_hybrid_loss(h, W, y[:-1], A, **kw), 'token shape'),
    (lambda h, W, y, A, kw: fused_linear_hybrid_loss(h, W, y + 100, A, **kw), 'token ids'),
    (lambda h, W, y, A, kw: fused_linear_hybrid_loss(h, W, y, A, n_vocab=99, **kw), 'n_vocab'),
    (lambda h, W, y, A, kw: fused_linear_hybrid_loss(h, W, y, A, z_E=torch.zeros(37, 49)), 'vocabulary mismatch'),
    (lambda h, W, y, A, kw: fused_linear_hybrid_loss(h, W, y, A, h_E=kw['h_E']), 'go together'),
    (lambda h, W, y, A, kw: fused_linear_hybrid_loss(h, W, y, A * float('nan'), **kw), 'advantages'),
    (lambda h, W, y, A, kw: fused_linear_hybrid_loss(h[:0], W, y[:0], A[:0], **kw), 'empty batch'),
])
def test_bad_input(bad, msg):
    h, W, y, A, mask, kw = toy(dtype=torch.float32)
    with pytest.raises((ValueError, TypeError), match=msg): bad(h, W, y, A, kw)

def test_nan_row_is_named():
    h, W, y, A, mask, kw = toy(dtype=torch.float32)
    h[13, 0] = float('nan')
    with pytest.raises(ValueError, match=r'rows 8\.\.15'): fused_linear_hybrid_loss(h, W, y, A, chunk_size=8, **kw)


def test_trainer_fused_head_matches_logits_path(tmp_path):
    "Two training steps with `fused_head` on and off end at the same parameters (tolerance 1e-5)."
    from hybrid_ilrl.rollout import char_tokenizer, tiny_llama
    from hybrid_ilrl.trainer import Config, Trainer, plain_head
    tok = char_tokenizer()
    prompts = [{"prompt": f"copy: {w} =", "answer": w} for w in ["abc", "xyz", "hello", "tree"]]
    def reward(prompts, completions, answer, **kw): return [float(c.strip()[:1] == a[:1]) + 0.1 * len(c) for c, a in zip(completions, answer)]
    def run(fused):
        cfg = Config(mode="hybrid", steps=2, prompts_per_step=2, group_size=2, max_new_tokens=4, lr=1e-3, grad_split=False,
                     fused_head=fused, output_dir=str(tmp_path / f"run{int(fused)}"), progress=False, tensorboard=False)
        t = Trainer(tiny_llama(tok, seed=0, vocab_pad=3), tiny_llama(tok, hidden=48, seed=1), tok, prompts, [reward], cfg)
        assert plain_head(t.acc.unwrap_model(t.student)) is not None
        t.train()
        return torch.cat([p.detach().flatten() for p in t.acc.unwrap_model(t.student).parameters()])
    torch.testing.assert_close(run(True), run(False), rtol=1e-5, atol=1e-5)
