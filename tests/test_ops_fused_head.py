"""The fused LM head (`hybrid_loss` with a `Hidden` student) against float64 autograd through the unfused path
`z = h Wᵀ + b` → `hybrid_logit_grad`: loss, dh, dW, db and statistics, over chunk sizes, teachers, options, dtypes."""
import pytest, torch

from hybrid_ilrl.ops.loss import hybrid_loss, token_stats, Hidden
from hybrid_ilrl.ops.fused_head import default_chunk_size
from hybrid_ilrl.ops.testing import unfused_reference, bf16_fused_error

torch.set_num_threads(1)
F64 = dict(rtol=1e-9, atol=1e-12)
F32 = dict(rtol=1e-4, atol=1e-5)

def toy(N=37, d=16, V=50, Vpad=0, dtype=torch.float64, seed=0, teacher='head', bias=False, shape=None):
    "Student `Hidden(h, W, b)` with `Vpad` padded head rows, a teacher (head, logits or None), tokens, A, mask."
    g = torch.Generator().manual_seed(seed)
    h, W = torch.randn(N, d, generator=g, dtype=dtype), torch.randn(V + Vpad, d, generator=g, dtype=dtype) / d ** 0.5
    h_E = h + 0.3 * torch.randn(N, d, generator=g, dtype=dtype)
    W_E = W + 0.2 * torch.randn(V + Vpad, d, generator=g, dtype=dtype)
    y, A = torch.randint(0, V, (N,), generator=g), torch.randn(N, generator=g, dtype=dtype)
    mask = torch.rand(N, generator=g) > 0.2
    b = 0.5 * torch.randn(V + Vpad, generator=g, dtype=dtype) if bias else None
    if shape:
        h, h_E, y, A, mask = h.view(*shape, d), h_E.view(*shape, d), y.view(shape), A.view(shape), mask.view(shape)
    teacher = Hidden(h_E, W_E[:V]) if teacher == 'head' else (h_E @ W_E[:V].T) if teacher == 'logits' else None
    return Hidden(h, W, b), teacher, y, A, mask

def check(student, teacher, y, A, mask, tol=F64, n_vocab=None, **opts):
    opts.setdefault('normalize', 'token')
    h, W, b = student
    V = n_vocab or W.shape[0]
    d64 = lambda t: None if t is None else t.double()
    t64 = None if teacher is None else Hidden(*map(d64, teacher)) if isinstance(teacher, Hidden) else teacher.double()
    s64 = Hidden(h.double(), W.double()[:V], None if b is None else b.double()[:V])
    ref_opts = {k: v for k, v in opts.items() if k in ('beta', 'tau', 'normalize')}
    ref = unfused_reference(s64, t64, y, A.double(), mask, **ref_opts)
    h1, W1, b1 = (None if t is None else t.detach().requires_grad_() for t in (h, W, b))
    loss, st = hybrid_loss(Hidden(h1, W1[:V], None if b1 is None else b1[:V]), teacher, y, A, mask, **opts)
    (2.5 * loss).backward()                          # backward scales by grad_output
    torch.testing.assert_close(loss.double(), ref.loss, **tol)
    torch.testing.assert_close(h1.grad.double(), 2.5 * ref.dh, **tol)
    torch.testing.assert_close(W1.grad[:V].double(), 2.5 * ref.dW, **tol)
    if b1 is not None: torch.testing.assert_close(b1.grad[:V].double(), 2.5 * ref.db, **tol)
    for name in ('k', 'logp', 'logq', 'entropy'):
        torch.testing.assert_close(getattr(st, name).double(), getattr(ref.rows, name), **tol)
    return h1.grad, W1.grad

@pytest.mark.parametrize('C', [1, 5, 8, 37, 64, None])
def test_chunk_sizes(C):
    student, teacher, y, A, mask = toy()
    assert not mask.all()
    check(student, teacher, y, A, mask, chunk_size=C)

@pytest.mark.parametrize('opts', [dict(tau=0.7, beta=0.4), dict(beta=0.0), dict(tau=2.0, normalize='none')])
@pytest.mark.parametrize('teacher', ['head', 'logits'])
def test_options(opts, teacher):
    check(*toy(teacher=teacher), chunk_size=6, **opts)

@pytest.mark.parametrize('normalize', ['sequence', 'token', 'none', 'sequence_token_mean'])
def test_no_teacher_bias_normalisations(normalize):
    check(*toy(teacher=None), chunk_size=6, beta=0.0)
    check(*toy(bias=True), chunk_size=9)
    check(*toy(N=36, shape=(4, 9)), chunk_size=7, normalize=normalize)

def test_teacher_bias():
    student, teacher, y, A, mask = toy()
    b_E = 0.3 * torch.randn(50, dtype=torch.float64)
    check(student, Hidden(teacher.h, teacher.W, b_E), y, A, mask, chunk_size=10)

def test_padded_vocab():
    student, teacher, y, A, mask = toy(Vpad=6, bias=True)
    _, dW = check(student, teacher, y, A, mask, chunk_size=10, n_vocab=50)
    assert dW.shape == student.W.shape and dW[50:].abs().max() == 0

@pytest.mark.parametrize('backend', ['cpu', 'torch'])
def test_fp32_backends(backend):
    student, teacher, y, A, mask = toy(N=64, d=32, V=300, seed=1, dtype=torch.float32)
    check(student, teacher, y, A, mask, tol=F32, chunk_size=24, backend=backend)

def test_matches_logits_path_fp32():
    "Same loss and gradients as the loss on the logits `h @ W.T`, with autograd through the matmul."
    student, teacher, y, A, mask = toy(N=40, d=24, V=500, seed=2, dtype=torch.float32, shape=(5, 8), teacher='logits')
    h1, W1, h2, W2 = (t.detach().clone().requires_grad_() for t in (student.h, student.W, student.h, student.W))
    l1, s1 = hybrid_loss(h1 @ W1.T, teacher, y, A, mask, beta=0.7, tau=0.9)
    l1.backward()
    l2, s2 = hybrid_loss(Hidden(h2, W2), teacher, y, A, mask, beta=0.7, tau=0.9, chunk_size=7)
    l2.backward()
    torch.testing.assert_close(l2, l1, **F32)
    torch.testing.assert_close(h2.grad, h1.grad, **F32)
    torch.testing.assert_close(W2.grad, W1.grad, **F32)
    for a, b in zip(s2, s1): torch.testing.assert_close(a, b, **F32)

def test_statistics_only():
    student, teacher, y, A, mask = toy(dtype=torch.float32)
    st = token_stats(student, teacher, y, mask, chunk_size=8)
    f64 = lambda side: Hidden(side.h.double(), side.W.double())
    ref = unfused_reference(f64(student), f64(teacher), y, A.double(), mask, normalize='none')
    for name in ('k', 'logp', 'logq', 'entropy'):
        torch.testing.assert_close(getattr(st, name).double(), getattr(ref.rows, name), **F32)
    with torch.no_grad(): loss, st2 = hybrid_loss(student, teacher, y, A, mask, normalize='token', chunk_size=8)
    assert not loss.requires_grad and all(torch.equal(a, b) for a, b in zip(st, st2))

def test_bf16_error():
    err = bf16_fused_error(N=128, d=32, V=1000)
    assert err['loss'] < 1e-5 and err['dh'] < 1e-2 and err['dW'] < 1e-2, err

def test_default_chunk():
    "Chunks by a memory budget (256 MB of fp32 logits), at least 256 rows: 8-row chunks made 1,440 matmuls a step."
    assert default_chunk_size(768, 32000) == 768 and default_chunk_size(16384, 128256) == 261
    assert default_chunk_size(16384, 262144) == 256 and default_chunk_size(5, 16) == 5

@pytest.mark.parametrize('bad, msg', [
    (lambda s, t, y, A: hybrid_loss(Hidden(s.h, s.W[:, :5]), t, y, A), 'hidden size mismatch'),
    (lambda s, t, y, A: hybrid_loss(Hidden(s.h, s.W.double()), t, y, A), 'dtype mismatch'),
    (lambda s, t, y, A: hybrid_loss(s, t, y[:-1], A), 'token shape'),
    (lambda s, t, y, A: hybrid_loss(s, t, y + 100, A), 'out of range'),
    (lambda s, t, y, A: hybrid_loss(s, torch.zeros(37, 49), y, A), 'vocabulary mismatch'),
    (lambda s, t, y, A: hybrid_loss(s, Hidden(t.h[:30], t.W), y, A), 'shape mismatch'),
    (lambda s, t, y, A: hybrid_loss(s, t, y, A * float('nan')), 'advantages'),
    (lambda s, t, y, A: hybrid_loss(Hidden(s.h[:0], s.W), t, y[:0], A[:0]), 'empty batch'),
    (lambda s, t, y, A: hybrid_loss(s, t, y, A), r"needs rows shaped \[B, T\]"),
    (lambda s, t, y, A: hybrid_loss(s, t, y, A, normalize='token', chunk_size=0), 'chunk_size'),
])
def test_bad_input(bad, msg):
    student, teacher, y, A, mask = toy(dtype=torch.float32)
    with pytest.raises((ValueError, TypeError), match=msg): bad(student, teacher, y, A)

def test_nan_row_is_named():
    "A NaN in the hidden states is found by the kernel in its chunk and named by its global row, after the last chunk."
    student, teacher, y, A, mask = toy(dtype=torch.float32)
    student.h[13, 0] = float('nan')
    with pytest.raises(ValueError, match=r'student logits contain NaN, at position \(13,\)'):
        hybrid_loss(student, teacher, y, A, normalize='token', chunk_size=8)
