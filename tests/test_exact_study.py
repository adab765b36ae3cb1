"""Fast tests for `hybrid_ilrl.exact_study`: the quick study runs, its results are finite and JSON-serialisable,
reruns agree, and bad settings are refused by name."""
import json, math
import pytest, torch
from hybrid_ilrl.exact_study import (ExactStudyConfig, run_exact_study, exact_table, make_task, exact_metrics,
                                     optimal_logprob, conditional_logits, t_quantile)

FIGURES = ('exact_curves.png', 'exact_tradeoff.png', 'exact_variance.png')

@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("exact_study")
    return run_exact_study(ExactStudyConfig.quick(), out_dir=out), out

def _numbers(x):
    if isinstance(x, dict): return [v for y in x.values() for v in _numbers(y)]
    if isinstance(x, list): return [v for y in x for v in _numbers(y)]
    return [x] if isinstance(x, float) else []

def test_quick_study_is_finite_and_serialisable(quick):
    res, out = quick
    assert json.loads(json.dumps(res, allow_nan=False)) == res
    nums = _numbers(res)
    assert len(nums) > 1000 and all(math.isfinite(v) for v in nums)
    assert json.loads((out / 'exact_study.json').read_text())['curves'] == res['curves']
    for name in FIGURES: assert (out / name).stat().st_size > 0, name

def test_quick_study_shapes_and_table(quick):
    res, _ = quick
    cfg = ExactStudyConfig.quick()
    assert ExactStudyConfig(**res['config']) == cfg
    assert res['curves']['steps'][-1] == cfg.steps
    for mode in cfg.modes + ('exact',):
        L = res['curves']['modes'][mode]['L']
        assert len(L) == len(res['curves']['steps']) and all(len(row) == len(cfg.seeds) for row in L)
        assert min(L[-1]) > res['task']['optimum']['L']  # nothing beats the closed-form optimum
    assert len(res['variance']['checkpoints']) == len(cfg.var_checkpoints)
    table = exact_table(res)
    for mode in cfg.modes + ('exact', 'optimum π*'): assert f"| {mode} " in table, mode
    assert "hybrid / rlhf" in table

def test_rerun_is_identical():
    cfg = ExactStudyConfig.quick(steps=6, eval_every=3, lam_sweep=(1.,), var_batches=4, var_checkpoints=(0., 1.))
    a, b = run_exact_study(cfg), run_exact_study(cfg)
    a.pop('seconds'), b.pop('seconds')
    assert a == b

@pytest.mark.parametrize("kw,field", [
    (dict(modes=('hybrid', 'ppo')), 'modes'), (dict(modes=()), 'modes'), (dict(seeds=()), 'seeds'),
    (dict(seeds=(0,)), 'seeds'), (dict(lr=0.), 'lr'), (dict(lr=-1e-3), 'lr'), (dict(beta=0.), 'beta'),
    (dict(group_size=1), 'group_size'), (dict(steps=0), 'steps'), (dict(var_batches=1), 'var_batches'),
    (dict(ci=1.), 'ci'), (dict(wrong_frac=1.), 'wrong_frac'), (dict(lam_sweep=(-1.,)), 'lam_sweep'),
    (dict(sweep_modes=('distill',)), 'sweep_modes'), (dict(prompts_per_step=33), 'prompts_per_step'),
    (dict(var_checkpoints=(2.,)), 'var_checkpoints')])
def test_bad_config_names_the_field(kw, field):
    with pytest.raises(ValueError, match=rf"ExactStudyConfig\.{field} "):
        ExactStudyConfig(**kw)

def test_closed_form_optimum_beats_random_policies():
    cfg = ExactStudyConfig.quick()
    task = make_task(cfg)
    theta = conditional_logits(optimal_logprob(task, cfg.beta, cfg.lam), cfg.V, cfg.T)
    L_star = exact_metrics(theta[None], task, cfg.beta, cfg.lam)['L']
    rnd = theta + torch.randn(8, *theta.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert (exact_metrics(rnd, task, cfg.beta, cfg.lam)['L'] > L_star).all()

def test_t_quantile_against_tables():
    for q, df, ref in [(0.975, 9, 2.262157), (0.975, 1, 12.706205), (0.995, 4, 4.604095)]:
        assert abs(t_quantile(q, df) - ref) < 1e-5
