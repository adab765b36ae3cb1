"""Train 2 steps of a tiny hybrid run and save the parameters: run once with plain python, once under
`accelerate launch --num_processes 2` (gloo, CPU); tests/test_trainer.py compares them."""
import sys, torch
from accelerate import Accelerator
from hybrid_ilrl.rollout import char_tokenizer, tiny_llama
from hybrid_ilrl.config import Config
from hybrid_ilrl.trainer import Trainer

def reward(prompts, completions, answer, **kw):
    return [float(c[:1] == a[:1]) + 0.1 * len(c) for c, a in zip(completions, answer)]

if __name__ == "__main__":
    out = sys.argv[1]
    tok = char_tokenizer()
    prompts = [{"prompt": f"copy: {w} =", "answer": w} for w in ["abc", "xyz", "hello", "tree"]]
    cfg = Config(mode="hybrid", steps=2, prompts_per_step=4, group_size=2, max_new_tokens=5, lr=1e-3,
                 output_dir=out + ".run", progress=False, tensorboard=False, save_steps=0)
    accel = Accelerator(cpu=True)
    t = Trainer(tiny_llama(tok, seed=0), tiny_llama(tok, hidden=96, seed=1), tok, prompts, [reward], cfg, accel)
    t.train()
    if accel.is_main_process:
        torch.save(torch.cat([p.detach().flatten() for p in t.model.parameters()]), out)
