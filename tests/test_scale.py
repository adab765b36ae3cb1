"""Issue 13, the trainer side: micro-batches (the gradient of one optimizer step equals the unbatched one), separate
generation and teacher batch sizes, bf16 mixed precision on CPU, LoRA students (every mode, fused head, exact resume,
a merged final model), `output_dir/final`, evaluation and trackers. Tiny models on CPU."""
import math, warnings
from dataclasses import replace
from pathlib import Path
import pytest, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from hybrid_ilrl.rollout import char_tokenizer, tiny_llama
from hybrid_ilrl.config import Config, MODES
from hybrid_ilrl.trainer import Trainer, is_peft, plain_head

TOK = char_tokenizer()
PROMPTS = [{"prompt": f"copy: {w} =", "answer": w} for w in ["abc", "xyz", "hello", "tree", "blue", "moon"]]

def reward(prompts, completions, answer, **kw):
    return [float(c.strip()[:1] == a[:1]) + 0.1 * len(c) for c, a in zip(completions, answer)]

def make(out, mode="hybrid", student=None, eval_prompts=None, **kw):
    cfg = dict(mode=mode, max_steps=2, num_generations=3, per_device_train_batch_size=9, gradient_accumulation_steps=1,
               max_completion_length=5, learning_rate=1e-3, beta=0.5, lam=2.0, output_dir=str(out), progress=False)
    teacher = None if mode == "rl" else tiny_llama(TOK, hidden=48, seed=1)
    return Trainer(student or tiny_llama(TOK, seed=0), teacher, TOK, PROMPTS, [reward], Config(**cfg | kw),
                   eval_prompts=eval_prompts)

def flat(model): return torch.cat([p.detach().flatten() for p in model.parameters()])

@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("mode", MODES)
def test_micro_batches_give_the_unbatched_gradient(tmp_path, mode, fused):
    "9 completions (3 groups of 3) as one micro-batch and as micro-batches of 2: the same gradient, to fp32 rounding."
    t = make(tmp_path, mode, fused_head=fused)
    r, R, _, x_E = t.rollout(0)
    grads = []
    for cfg in (t.cfg, replace(t.cfg, per_device_train_batch_size=2, gradient_accumulation_steps=3)):  # 2,2,2,2,1
        _, A, norms = t.estimator_grad(r, R, x_E, split=True, cfg=cfg)
        grads.append(([p.grad.clone() for p in t.model.parameters() if p.grad is not None], A, norms))
    (g1, A1, n1), (g2, A2, n2) = grads
    torch.testing.assert_close(A2, A1, rtol=1e-5, atol=1e-6)           # advantages over whole groups
    assert len(g1) == len(g2)
    for a, b in zip(g2, g1): torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(torch.tensor(n2), torch.tensor(n1), rtol=1e-4, atol=1e-7)

def test_one_step_with_gradient_accumulation_equals_one_micro_batch(tmp_path):
    """A whole optimizer step (clip, Adam) with 3 micro-batches of 3 ends where 1 micro-batch of 9 does (to 1% of lr:
    Adam divides by √v, so fp32 rounding of a near-zero gradient can move a weight by a fraction of lr)."""
    a, b = make(tmp_path / "a", max_steps=1), make(tmp_path / "b", max_steps=1, per_device_train_batch_size=3,
                                                    gradient_accumulation_steps=3)
    a.train_step(); b.train_step()
    torch.testing.assert_close(flat(b.model), flat(a.model), rtol=0, atol=1e-5)

def test_generation_and_teacher_batch_sizes_change_nothing(tmp_path):
    r, R, _, x_E = make(tmp_path / "a").rollout(1)
    r2, R2, _, x_E2 = make(tmp_path / "b", generation_batch_size=3, teacher_batch_size=4).rollout(1)
    assert r2.completions == r.completions and torch.equal(R2, R)
    torch.testing.assert_close(x_E2.h[r.mask], x_E.h[r.mask], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="generation_batch_size=4: must be whole groups"):
        make(tmp_path / "c", generation_batch_size=4)

def test_bf16_trains_like_fp32(tmp_path):
    "Stated tolerance: KL and gradient norm within 2% at each step; parameters within 10% of the fp32 update."
    start, runs = flat(tiny_llama(TOK, seed=0)), {}
    for bf16 in (False, True):
        t = make(tmp_path / str(bf16), bf16=bf16)
        assert t.accel.mixed_precision == ("bf16" if bf16 else "no")
        runs[bf16] = t.train(), flat(t.model)
    for a, b in zip(runs[False][0], runs[True][0]):
        for name in ("kl/token", "grad/norm"): assert b[name] == pytest.approx(a[name], rel=2e-2), name
    assert float((runs[True][1] - runs[False][1]).norm() / (runs[False][1] - start).norm()) < 0.1

peft = pytest.importorskip("peft")

def lora(targets=("q_proj", "v_proj")):
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=list(targets))
    return peft.get_peft_model(tiny_llama(TOK, seed=0), cfg)

@pytest.mark.parametrize("mode", MODES)
def test_lora_student_trains_in_every_mode(tmp_path, mode):
    t = make(tmp_path, mode, student=lora(), learning_rate=1e-2)
    assert is_peft(t.model) and plain_head(t.model) is t.model.get_base_model().lm_head   # the fused head runs
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    hist = t.train()
    assert all(math.isfinite(v) for v in hist[-1].values())
    moved = {n for n, p in t.model.named_parameters() if not torch.equal(before[n], p)}
    assert moved and all("lora_" in n for n in moved)

def test_lora_head_uses_the_logits_path(tmp_path):
    assert plain_head(make(tmp_path, student=lora(("q_proj", "lm_head"))).model) is None

def test_lora_resumes_exactly_and_saves_a_merged_model(tmp_path):
    straight = make(tmp_path / "a", student=lora(), max_steps=3, learning_rate=1e-2)
    straight.train()
    make(tmp_path / "b", student=lora(), max_steps=2, learning_rate=1e-2).train()
    assert (tmp_path / "b" / "checkpoint-2" / "adapter_model.safetensors").is_file()
    resumed = make(tmp_path / "b", student=lora(), max_steps=3, learning_rate=1e-2, resume_from_checkpoint=True)
    assert resumed.step == 2
    resumed.train()
    assert torch.equal(flat(resumed.model), flat(straight.model))
    for i, s in straight.opt.state_dict()["state"].items():
        assert all(torch.equal(v, resumed.opt.state_dict()["state"][i][k]) for k, v in s.items())
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "b" / "final")
    ids = TOK(["copy: abc ="], return_tensors="pt").input_ids
    torch.testing.assert_close(merged(ids).logits, resumed.model(input_ids=ids).logits, rtol=1e-5, atol=1e-5)

def test_final_folder_eval_and_tensorboard(tmp_path):
    held_out = [{"prompt": f"copy: {w} =", "answer": w} for w in ("sun", "sky")]
    t = make(tmp_path, report_to="tensorboard", eval_steps=1, eval_prompts=held_out)
    hist = t.train()
    assert all(any(k.startswith("eval/") for k in row) for row in hist)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    assert torch.equal(flat(model), flat(t.model))
    assert AutoTokenizer.from_pretrained(tmp_path / "final").get_vocab() == TOK.get_vocab()
    assert list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))


def test_eval_prompts_file_from_the_config(tmp_path):
    "Config(eval_prompts=FILE) is read by the trainer itself: Python and the command line evaluate the same prompts."
    import json
    path = tmp_path / "eval.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"copy: {w} =", "answer": w}) for w in ("sun", "sky")))
    cfg = Config(max_steps=1, num_generations=3, per_device_train_batch_size=3, max_completion_length=3,
                 eval_prompts=str(path), output_dir=str(tmp_path / "run"), progress=False)
    t = Trainer(tiny_llama(TOK, seed=0), tiny_llama(TOK, hidden=48, seed=1), TOK, PROMPTS, [reward], cfg)
    assert [row["prompt"] for row in t.eval_rows] == ["copy: sun =", "copy: sky ="]
    assert any(k.startswith("eval/") for k in t.train()[-1])


def test_lora_example_runs_and_its_final_model_loads(tmp_path):
    "examples/lora.py as a user runs it (tiny models): it trains, and `final/` loads without peft."
    import os, subprocess, sys
    script = Path(__file__).resolve().parent.parent / "examples" / "lora.py"
    out = tmp_path / "lora"
    subprocess.run([sys.executable, str(script), "--output_dir", str(out), "--max_steps", "2"], check=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, timeout=300)
    model = AutoModelForCausalLM.from_pretrained(out / "final")
    assert not any("lora" in name for name, _ in model.named_parameters())
