import json, math, os, subprocess, sys, shutil
from pathlib import Path
import pytest, torch, yaml
from hybrid_ilrl.rollout import char_tokenizer, tiny_llama
from hybrid_ilrl.config import Config, MODES
from hybrid_ilrl.trainer import Trainer
from hybrid_ilrl.cli import main

TOK = char_tokenizer()
PROMPTS = [{"prompt": f"copy: {w} =", "answer": w} for w in ["abc", "xyz", "hello", "tree", "blue", "moon"]]

def first_letter(prompts, completions, answer, **kw):
    return [float(c.strip()[:1] == a[:1]) + 0.1 * len(c) for c, a in zip(completions, answer)]

def make(tmp_path, mode="hybrid", reward_fns=(first_letter,), prompts=PROMPTS, teacher=True, **kw):
    cfg = dict(mode=mode, max_steps=2, num_generations=2, per_device_train_batch_size=4, gradient_accumulation_steps=1,
               max_completion_length=4, learning_rate=1e-3, output_dir=str(tmp_path / "run"), progress=False)
    cfg.update(kw)
    t = tiny_llama(TOK, hidden=48, seed=1) if teacher and mode != "rl" else None
    return Trainer(tiny_llama(TOK, seed=0), t, TOK, list(prompts), list(reward_fns), Config(**cfg))

def flat(t): return torch.cat([p.detach().flatten() for p in t.model.parameters()])

@pytest.mark.parametrize("mode", MODES)
def test_every_mode_trains(tmp_path, mode):
    t = make(tmp_path, mode)
    before = flat(t).clone()
    hist = t.train()
    assert len(hist) == 2 and all(math.isfinite(v) for v in hist[-1].values())
    assert not torch.equal(before, flat(t))
    for k in ("reward/mean", "kl/token", "grad/dense_norm", "grad/sparse_norm", "entropy/token", "perf/tokens_per_s"):
        assert k in hist[-1]
    assert (tmp_path / "run" / "metrics.csv").exists() and (tmp_path / "run" / "checkpoint-2").is_dir()

def test_resume_is_exact(tmp_path):
    straight = make(tmp_path / "a", max_steps=4); straight.train()
    make(tmp_path / "b", max_steps=2).train()
    resumed = make(tmp_path / "b", max_steps=4, resume_from_checkpoint=True)
    assert resumed.step == 2
    resumed.train()
    torch.testing.assert_close(flat(resumed), flat(straight), rtol=0, atol=1e-6)
    rows = (tmp_path / "b" / "run" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 4  # header + one row per step, none duplicated by the resume

def test_interrupted_checkpoint_is_ignored(tmp_path):
    t = make(tmp_path, max_steps=2, save_steps=1); t.train()
    (tmp_path / "run" / ".tmp-checkpoint-3").mkdir()  # a write that was interrupted
    assert t.latest_checkpoint().name == "checkpoint-2"

def test_bad_reward_functions(tmp_path):
    def boom(prompts, completions, **kw): raise KeyError("answer")
    def nan(prompts, completions, **kw): return [float("nan")] * len(completions)
    def short(prompts, completions, **kw): return [0.0]
    for f, msg in [(boom, "reward function 'boom' raised KeyError"), (nan, "'nan' returned nan for sample 0"),
                   (short, "'short' returned 1 values for 4 completions")]:
        with pytest.raises((RuntimeError, ValueError), match=msg): make(tmp_path, reward_fns=[f]).train_step()

def test_bad_setup(tmp_path):
    with pytest.raises(ValueError, match="empty prompt list"): make(tmp_path, prompts=[])
    with pytest.raises(ValueError, match="needs a teacher"): make(tmp_path, teacher=False)
    with pytest.raises(ValueError, match="needs reward functions"): make(tmp_path, reward_fns=[])
    with pytest.raises(ValueError, match="longer than max_prompt_length=5"): make(tmp_path, max_prompt_length=5).train_step()
    other = tiny_llama(char_tokenizer("abc"))
    with pytest.raises(ValueError, match="the teacher has 7 output rows but the tokenizer has"):
        Trainer(tiny_llama(TOK), other, TOK, PROMPTS, [first_letter], Config(output_dir=str(tmp_path)))

def test_padded_teacher_vocabulary(tmp_path):
    teacher = tiny_llama(TOK, hidden=48, vocab_pad=7, seed=1)
    t = Trainer(tiny_llama(TOK, vocab_pad=3), teacher, TOK, PROMPTS, [first_letter],
                Config(max_steps=1, num_generations=2, per_device_train_batch_size=4, gradient_accumulation_steps=1,
                       max_completion_length=3, output_dir=str(tmp_path), progress=False))
    assert t.n_vocab == len(TOK)
    assert math.isfinite(t.train()[-1]["kl/token"])

def test_config_file_and_cli(tmp_path):
    d = tmp_path
    tiny_llama(TOK, seed=0).save_pretrained(d / "student"); TOK.save_pretrained(d / "student")
    tiny_llama(TOK, hidden=48, seed=1).save_pretrained(d / "teacher")
    (d / "prompts.jsonl").write_text("\n".join(json.dumps(p) for p in PROMPTS))
    cfg = dict(mode="distill", student=str(d / "student"), teacher=str(d / "teacher"), prompts=str(d / "prompts.jsonl"),
               max_steps=1, num_generations=2, per_device_train_batch_size=4, gradient_accumulation_steps=1,
               max_completion_length=3, output_dir=str(d / "run"), progress=False)
    (d / "run.yaml").write_text(yaml.safe_dump(cfg))
    main(["train", "--config", str(d / "run.yaml"), "--set", "max_steps=2"])
    assert (d / "run" / "checkpoint-2").is_dir()
    (d / "bad.yaml").write_text(yaml.safe_dump({**cfg, "betta": 1.0}))
    with pytest.raises(ValueError, match="unknown config keys"): Config.load(d / "bad.yaml")


def test_trainer_fused_head_matches_logits_path(tmp_path):
    "Two training steps with `fused_head` on and off end at the same parameters (tolerance 1e-5)."
    tok = TOK
    prompts = [{"prompt": f"copy: {w} =", "answer": w} for w in ["abc", "xyz", "hello", "tree"]]
    def reward(prompts, completions, answer, **kw):
        return [float(c.strip()[:1] == a[:1]) + 0.1 * len(c) for c, a in zip(completions, answer)]
    def run(fused):
        cfg = Config(mode="hybrid", max_steps=2, num_generations=2, per_device_train_batch_size=4,
                     gradient_accumulation_steps=1, max_completion_length=4, learning_rate=1e-3, grad_split=False,
                     fused_head=fused, output_dir=str(tmp_path / f"run{int(fused)}"), progress=False)
        student = tiny_llama(tok, seed=0, vocab_pad=3)
        assert type(student.get_output_embeddings()) is torch.nn.Linear     # a plain head: the fused path runs
        Trainer(student, tiny_llama(tok, hidden=48, seed=1), tok, prompts, [reward], cfg).train()
        return torch.cat([p.detach().flatten() for p in student.parameters()])
    torch.testing.assert_close(run(True), run(False), rtol=1e-5, atol=1e-5)
