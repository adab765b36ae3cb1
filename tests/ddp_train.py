"""Train a tiny hybrid run and save its final weights, flat, to OUT: once as one plain process, once under
`accelerate launch` with 2 processes (DDP, or FSDP2 with `examples/accelerate/fsdp2.yaml`; gloo on CPU);
tests/test_distributed.py compares them.

    python ddp_train.py OUT [--resume-at K | --nan-at K]

`--resume-at K`: train K steps (writing checkpoint-K), then a new Trainer resumes from it to the end.
`--nan-at K`: no resume; the teacher's logits are NaN on the last process during step K only, so that process alone
finds the step non-finite: every process must skip it together (OUT.rank<i>.json: each process's skip count).
OUT.json records how the run went: the distributed type, whether the fused head was used, and under FSDP2 a check of
the fused loss on a sharded head weight (a `DTensor`) against the gathered one."""
import json, os, sys
import torch
import torch.distributed as dist
from accelerate import Accelerator, FullyShardedDataParallelPlugin
from accelerate.state import PartialState
from accelerate.utils import DistributedType
from hybrid_ilrl.rollout import char_tokenizer, tiny_llama
from hybrid_ilrl.config import Config
from hybrid_ilrl.trainer import Trainer, plain_head
from hybrid_ilrl.distributed import full_state, is_fsdp
from hybrid_ilrl.ops.loss import Hidden, hybrid_loss

STEPS = 3

def reward(prompts, completions, answer, **kw):
    return [float(c[:1] == a[:1]) + 0.1 * len(c) for c, a in zip(completions, answer)]

def accelerator()->Accelerator:
    "A CPU accelerator; FSDP2 when launched with an FSDP config (accelerate itself never shards on CPU)."
    accel = Accelerator(cpu=True)
    if os.environ.get("ACCELERATE_USE_FSDP", "false") == "true" and accel.num_processes > 1:
        accel.state.distributed_type = DistributedType.FSDP   # as accelerate's own CPU tests do; in PartialState
        PartialState().distributed_type = DistributedType.FSDP   # too, which every new AcceleratorState() copies
        accel.state.fsdp_plugin = FullyShardedDataParallelPlugin()   # read from the launch config (FSDP_* variables)
    return accel

def trainer(out:str, accel:Accelerator, max_steps:int, resume:bool=False)->Trainer:
    tok = char_tokenizer()
    prompts = [{"prompt": f"copy: {w} =", "answer": w} for w in ["abc", "xyz", "hello", "tree"]]
    cfg = Config(mode="hybrid", max_steps=max_steps, num_generations=2, per_device_train_batch_size=4,
                 gradient_accumulation_steps=2 // accel.num_processes,   # 4 prompts a step on 1 process or 2
                 max_completion_length=5, learning_rate=1e-3, output_dir=out + ".run",
                 progress=False, save_steps=0, resume_from_checkpoint=resume, logging_steps=1,
                 grad_split=True)   # logging steps backprop dense and sparse apart: both averaged
    return Trainer(tiny_llama(tok, seed=0), tiny_llama(tok, hidden=96, seed=1), tok, prompts, [reward], cfg, accel)

def sharded_head_check()->float:
    "Largest difference between `dW` of the fused loss on a sharded head weight and the average of the full ones."
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import distribute_tensor, Shard
    gen = torch.Generator().manual_seed(0)                       # the same head on every process
    W = torch.randn(51, 16, generator=gen, dtype=torch.float64) / 4
    gen.manual_seed(1 + dist.get_rank())                         # rows of its own
    h, y = torch.randn(12, 16, generator=gen, dtype=torch.float64), torch.randint(0, 51, (12,), generator=gen)
    W_d = distribute_tensor(W.clone(), init_device_mesh("cpu", (dist.get_world_size(),)), [Shard(0)]).requires_grad_()
    hybrid_loss(Hidden(h, W_d), None, y, 1.0, normalize="token")[0].backward()
    W_1 = W.clone().requires_grad_()
    hybrid_loss(Hidden(h, W_1), None, y, 1.0, normalize="token")[0].backward()
    dW = W_1.grad.clone()
    dist.all_reduce(dW)
    return float((W_d.grad.full_tensor() - dW / dist.get_world_size()).abs().max())

def nan_teacher_at(t:Trainer, step:int):
    "NaN teacher logits (from NaN hidden states) on the last process while `t` takes step `step` (1-based)."
    def hook(module, inputs, output):
        last = dist.is_initialized() and dist.get_rank() == dist.get_world_size() - 1
        return output * float("nan") if last and t.step == step - 1 else output
    t.teacher.model.norm.register_forward_hook(hook)   # its last hidden states: the fused head never calls lm_head

if __name__ == "__main__":
    out = sys.argv[1]
    if "--nan-at" in sys.argv:
        accel = accelerator()
        t = trainer(out, accel, STEPS)
        nan_teacher_at(t, int(sys.argv[sys.argv.index("--nan-at") + 1]))
        t.train()
        with open(f"{out}.rank{accel.process_index}.json", "w") as f: json.dump({"skipped": t.skipped}, f)
        accel.end_training()
        sys.exit(0)
    resume_at = int(sys.argv[sys.argv.index("--resume-at") + 1]) if "--resume-at" in sys.argv else None
    accel = accelerator()
    if resume_at:
        trainer(out, accel, resume_at).train()
        accel.free_memory()   # forget that trainer's model: accelerate's FSDP2 clip_grad_norm_ compares with each one
    t = trainer(out, accel, STEPS, resume=bool(resume_at))
    t.train()
    info = {"distributed_type": str(accel.distributed_type), "processes": accel.num_processes,
            "fsdp": is_fsdp(t.model), "fused_head": plain_head(t.model) is not None,
            "resumed_from": t.resumed_from and t.resumed_from.name}
    if info["fsdp"]: info["sharded_head_error"] = sharded_head_check()
    sd, _ = full_state(t.model)                                  # every process: FSDP2 gathers on the main one
    if accel.is_main_process:
        torch.save(torch.cat([w.flatten() for w in sd.values()]), out)
        with open(out + ".json", "w") as f: json.dump(info, f)
    accel.end_training()   # destroys the process group: a gloo group left to die with the process can abort it
