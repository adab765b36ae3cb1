"Fast CPU tests for `hybrid_ilrl.explorer`: the rows it draws match the reference gradients, the figure draws those rows, the widget redraws."
import io, subprocess, sys
import pytest, torch
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from hybrid_ilrl.objective import token_kl, token_logprob
from hybrid_ilrl.logit_grad import kl_grad, pg_grad, hybrid_logit_grad
from hybrid_ilrl.explorer import toy_logits, explorer_rows, explorer_figure, explorer

f64 = dict(dtype=torch.float64)
SETTINGS = [dict(), dict(beta=0.3, lam=2., tau=0.6, sharpness=2.5, y=4, R=0.),
            dict(beta=0., lam=1., tau=1.7, sharpness=0., y=11, R=0.8), dict(beta=1.5, lam=0., sharpness=4., y=2),
            dict(beta=0.7, lam=1.2, y=5, R=0.4, b=0.2, future_kl=0.9, V=7, seed=3)]

def close(a, b, eps=1e-12): torch.testing.assert_close(torch.as_tensor(a, **f64), torch.as_tensor(b, **f64), atol=eps, rtol=0)

# --- explorer_rows ---------------------------------------------------------------------

@pytest.mark.parametrize("kw", SETTINGS)
def test_rows_match_reference_and_autograd(kw):
    r = explorer_rows(**kw)
    beta, tau = kw.get('beta', 1.), kw.get('tau', 1.)
    z, z_E = toy_logits(kw.get('V', 12), kw.get('seed', 0))
    close(r.z, z); close(r.z_E, kw.get('sharpness', 1.) * z_E)
    close(r.p, torch.softmax(z / tau, -1)); close(r.q, torch.softmax(r.z_E / tau, -1))
    y, A = torch.tensor(r.y), torch.tensor(r.A, **f64)
    close(r.dense, beta * kl_grad(r.z, r.z_E, tau))
    close(r.sparse, pg_grad(r.z, y, A, tau))
    ref = hybrid_logit_grad(r.z, r.z_E, y, A, beta, tau)
    close(r.g, ref.g); close(r.g, r.dense + r.sparse)
    close(r.k, ref.k); close(r.entropy, ref.entropy)
    zg = r.z.clone().requires_grad_()
    loss = beta * token_kl(zg, r.z_E, tau=tau) - A * token_logprob(zg, y, tau)
    close(r.g, torch.autograd.grad(loss, zg)[0])
    for row in (r.dense, r.sparse, r.g): close(row.sum(), 0., eps=1e-6)

def test_advantage_formula():
    close(explorer_rows(beta=0.5, lam=2., R=0.3, b=0.1, future_kl=0.4).A, 2. * 0.3 - 0.5 * 0.4 - 0.1)
    close(explorer_rows(lam=2., R=1.).A, 1.)  # default baseline λ·0.5

def test_special_cases():
    zero = torch.zeros(12, **f64)
    assert torch.equal(explorer_rows(beta=0., y=3).dense, zero)
    z, _ = toy_logits()
    for tau in (0.5, 1., 2.):
        r = explorer_rows(y=5, tau=tau, z=z, z_E=z)
        close(r.dense, zero); close(r.k, 0.)
    close(explorer_rows(lam=0., y=5).sparse, zero, eps=1e-15)

def test_signs_match_captions():
    r = explorer_rows(y=7)
    assert torch.equal(-r.dense < 0, (r.p.log() - r.q.log()) > r.k)  # down where p/q > e^k
    step = -r.sparse  # A = +0.5: y up, the rest down in proportion to p
    assert step[7] > 0 and (step[torch.arange(12) != 7] < 0).all()
    z, z_E = toy_logits()
    r = explorer_rows(sharpness=50., y=7)  # sharp teacher: up iff the teacher's logit is above its mean under p
    assert torch.equal(-r.dense > 0, z_E > (torch.softmax(z, -1) * z_E).sum())

def test_default_token_is_sampled_reproducibly():
    ys = {explorer_rows(seed=s).y for s in range(20)}
    assert len(ys) > 1 and explorer_rows(seed=4).y == explorer_rows(seed=4).y

@pytest.mark.parametrize("kw,err,msg", [
    (dict(tau=0.), ValueError, "temperature must be positive"),
    (dict(y=12), ValueError, "out of range"),
    (dict(y=-1), ValueError, "out of range"),
    (dict(y=2.0), TypeError, "tokens must be integers"),
    (dict(beta=-1.), ValueError, "beta must be >= 0"),
    (dict(lam=float('nan')), ValueError, "lam must be >= 0"),
    (dict(sharpness=-2.), ValueError, "sharpness must be >= 0"),
    (dict(V=1), ValueError, "V must be an integer >= 2"),
    (dict(z=torch.zeros(5), z_E=torch.zeros(6)), ValueError, "vocabulary mismatch"),
    (dict(z=torch.zeros(2, 5), z_E=torch.zeros(2, 5)), ValueError, "one prefix"),
    (dict(z=torch.tensor([0., float('nan')]), z_E=torch.zeros(2)), ValueError, "NaN"),
])
def test_bad_input(kw, err, msg):
    with pytest.raises(err, match=msg):
        explorer_rows(**kw)

# --- explorer_figure -------------------------------------------------------------------

def _heights(ax): return torch.tensor([b.get_height() for c in ax.containers for b in c], **f64)

@pytest.mark.parametrize("kw", SETTINGS)
def test_figure_draws_the_rows(kw):
    fig = explorer_figure(**kw)
    try:
        assert isinstance(fig, Figure) and len(fig.axes) == 4
        r = fig.rows
        close(_heights(fig.axes[0]), torch.cat([r.p, r.q]))
        for ax, row in zip(fig.axes[1:], (r.dense, r.sparse, r.g)):
            close(_heights(ax), -row)
        assert [t.get_text() for t in fig.axes[-1].get_xticklabels()] == [str(i) for i in range(len(r.p))]
        assert f"{r.k:.3f}" in fig._suptitle.get_text() and f"{r.entropy:.3f}" in fig._suptitle.get_text()
        buf = io.BytesIO(); fig.savefig(buf, format='png')  # renders with no pyplot / display
        assert buf.getvalue()[:4] == b'\x89PNG'
    finally:
        plt.close(fig)

# --- explorer (widget) ------------------------------------------------------------------

def test_explorer_builds_and_redraws():
    pytest.importorskip("ipywidgets")
    w = explorer(y=7)
    sliders = w.children[:-1]
    assert [s.description for s in sliders] == ['β (KL weight)', 'λ (reward weight)', 'τ (temperature)', 'teacher sharpness κ',
                                                'sampled token y', 'reward R']
    assert isinstance(w.result, Figure) and w.result.rows.y == 7 and sliders[4].max == 11
    sliders[0].value = 0.  # β
    sliders[4].value = 3   # y
    r = w.result.rows
    assert r.y == 3 and torch.equal(r.dense, torch.zeros(12, **f64))
    close(r.g, explorer_rows(beta=0., y=3).g)
    sliders[3].value = 2.5  # sharpness
    close(w.result.rows.z_E, 2.5 * toy_logits()[1])
    assert "needs a live kernel" in repr(w)

def test_explorer_import_without_ipywidgets():
    code = ("import sys; sys.modules['ipywidgets'] = None\n"
            "import hybrid_ilrl.explorer as e\n"
            "assert len(e.explorer_figure().axes) == 4\n"
            "try: e.explorer()\n"
            "except ImportError as err: assert 'ipywidgets' in str(err); print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
