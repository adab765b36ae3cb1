"""The benchmark against TRL's `DistillationTrainer` (notebook 91): the setup, the same-batch check (TRL's reverse KL and
gradient equal our dense term), and a tiny run of `python -m hybrid_ilrl.bench_trl`, each contender in its own process.
Needs the optional `bench` extra (`trl>=1.16`); the TRL tests are skipped, with the reason, without it."""
import csv, json
import pytest
from hybrid_ilrl.bench_trl import (BenchSetup, wide_char_tokenizer, make_prompts, trl_missing, same_batch_check,
                                   check_same_work, main)

WHY = trl_missing()
needs_trl = pytest.mark.skipif(WHY is not None, reason=f"benchmark against TRL skipped: {WHY}")
TINY = dict(vocab=2000, hidden=64, layers=2, batch=8, group=4, new_tokens=8, prompt_len=8)

def test_setup():
    assert len(wide_char_tokenizer(3000)) == 3000
    ps = make_prompts(BenchSetup(**TINY))
    assert len(ps) == 2 and len(set(ps)) == 2 and {len(p) for p in ps} == {8}
    for bad, msg in [(dict(batch=6, group=4), "multiple of group"), (dict(group=1, batch=4), "at least 2"), (dict(steps=0), "steps")]:
        with pytest.raises(ValueError, match=msg): BenchSetup(**bad)
    with pytest.raises(ValueError, match="vocab=10"): wide_char_tokenizer(10)

@needs_trl
def test_same_batch_same_reverse_kl_and_dense_gradient():
    chk = same_batch_check(BenchSetup(**TINY))
    assert abs(chk["kl_trl"] - chk["kl_ours"]) < 1e-4 * chk["kl_ours"]
    assert chk["max_grad_rel_diff"] < 1e-4 and chk["sequences"] == 8 and chk["tokens"] > 0

@needs_trl
def test_cli_tiny(tmp_path, capsys):
    out = tmp_path / "bench"
    main(["--vocab", "2000", "--hidden", "64", "--layers", "2", "--batch", "8", "--group", "4", "--new-tokens", "8",
          "--prompt-len", "8", "--steps", "2", "--warmup", "1", "--out", str(out)])
    table = capsys.readouterr().out
    assert "| ours |" in table and "| trl |" in table
    with open(out.with_suffix(".csv")) as f: recs = list(csv.DictReader(f))
    assert [r["contender"] for r in recs] == ["ours", "trl"]
    num = ("tokens_per_step", "kl_r0", "step_median_s", "loss_grad_median_s", "peak_step_bytes")
    recs = [{**r, **{k: float(r[k]) for k in num}, "sequences_per_step": int(r["sequences_per_step"]),
             "tokens_r0": int(r["tokens_r0"])} for r in recs]
    check_same_work(recs)
    for r in recs:
        assert r["step_median_s"] > 0 and r["loss_grad_median_s"] > 0 and len(json.loads(r["step_times_s"])) == 2
    bad = [dict(r) for r in recs]; bad[1]["sequences_per_step"] = 4
    with pytest.raises(AssertionError, match="sequences per step"): check_same_work(bad)
    with open(out.parent / (out.name + "_summary.csv")) as f: summary = list(csv.DictReader(f))
    assert float(summary[0]["step_ratio"]) == 1.0 and summary[1]["contender"] == "trl"
