"""A LoRA student trained toward a full teacher with a task reward (mode 'hybrid'), then saved merged.

    pip install "hybrid_ilrl[lora]"     # or: pip install peft
    python examples/lora.py             # tiny models on CPU, a minute
    python examples/lora.py --student Qwen/Qwen2.5-0.5B-Instruct --teacher Qwen/Qwen2.5-7B-Instruct --bf16

Only the adapters train (the optimizer sees the parameters that require a gradient); the LM head stays a plain
`nn.Linear`, so the loss runs fused with it. `output_dir/checkpoint-*` hold the adapters and the optimizer state
(`--resume` continues exactly); `output_dir/final` is the merged model, loadable with `from_pretrained` without peft.
"""
import argparse
from peft import LoraConfig, get_peft_model
from hybrid_ilrl.config import Config
from hybrid_ilrl.trainer import Trainer

def first_letter(prompts, completions, answer, **kw):
    "1 when the completion starts with the answer's first letter."
    return [float(c.strip()[:1] == a[:1]) for c, a in zip(completions, answer)]

def models(student:str|None, teacher:str|None):
    "Student, teacher and tokenizer: from the hub when named, else the tiny Llamas of notebook 04."
    if student is None:
        from hybrid_ilrl.rollout import char_tokenizer, tiny_llama
        tok = char_tokenizer()
        return tiny_llama(tok, seed=0), tiny_llama(tok, hidden=96, seed=1), tok
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(student)
    if tok.pad_token is None: tok.pad_token = tok.eos_token
    return AutoModelForCausalLM.from_pretrained(student), AutoModelForCausalLM.from_pretrained(teacher), tok

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student")
    ap.add_argument("--teacher")
    ap.add_argument("--output_dir", default="runs/lora")
    ap.add_argument("--max_steps", type=int, default=20)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args()
    student, teacher, tok = models(a.student, a.teacher)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    student = get_peft_model(student, lora)
    student.print_trainable_parameters()
    words = ["abc", "xyz", "hello", "tree", "blue", "moon", "cat", "dog"]
    prompts = [{"prompt": f"copy: {w} =", "answer": w} for w in words]
    cfg = Config(mode="hybrid", beta=1.0, lam=1.0, num_generations=4, per_device_train_batch_size=8,
                 gradient_accumulation_steps=2, max_completion_length=8, learning_rate=1e-3, max_steps=a.max_steps,
                 bf16=a.bf16, save_steps=10, output_dir=a.output_dir, resume_from_checkpoint=a.resume,
                 overwrite_output_dir=not a.resume)
    Trainer(student, teacher, tok, prompts, [first_letter], cfg).train()
    print(f"merged model: {a.output_dir}/final")
