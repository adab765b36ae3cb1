"""Two CPU processes (gloo) train as one: DDP, and FSDP2 with the example accelerate config, each resuming from a
checkpoint half way, against one plain process. `accelerate launch --cpu` would start a single process, so the
launches below go through torchrun (`--multi_gpu`, or the FSDP config) and `tests/ddp_train.py` asks for the CPU."""
import json, os, subprocess, sys
from pathlib import Path
import pytest, torch

HERE = Path(__file__).parent
SCRIPT, FSDP2 = HERE / "ddp_train.py", HERE.parent / "examples" / "accelerate" / "fsdp2.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TOL = dict(rtol=1e-4, atol=1e-4)   # 3 AdamW steps at lr 1e-3: fp32 sums in another order (measured: 2.4e-5)

def run(out:Path, *launch:str, extra:tuple=())->tuple[torch.Tensor, dict]:
    "Run ddp_train.py (under `accelerate launch` with `launch` options, if any): its final weights and its report."
    cmd = [sys.executable, str(SCRIPT), str(out)]
    if launch:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch, "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(SCRIPT), str(out),
               "--resume-at", "2", *extra]
    subprocess.run(cmd, check=True, env=ENV, timeout=600)
    return torch.load(out), json.loads(Path(f"{out}.json").read_text())

@pytest.fixture(scope="module")
def one(tmp_path_factory): return run(tmp_path_factory.mktemp("one") / "one.pt")

def test_one_process(one):
    assert one[1] == {"distributed_type": "DistributedType.NO", "processes": 1, "fsdp": False, "fused_head": True,
                      "resumed_from": None}

def test_ddp_matches_one_process(one, tmp_path):
    # with the logging steps' dense/sparse split: the trainer averages its second backward (`ddp_average`)
    weights, info = run(tmp_path / "ddp.pt", "--multi_gpu")
    assert (info["distributed_type"], info["processes"], info["fsdp"]) == ("DistributedType.MULTI_CPU", 2, False)
    assert info["resumed_from"] == "checkpoint-2" and info["fused_head"]
    torch.testing.assert_close(weights, one[0], **TOL)

def test_fsdp2_matches_one_process(one, tmp_path):
    weights, info = run(tmp_path / "fsdp.pt", "--config_file", str(FSDP2))
    assert (info["distributed_type"], info["processes"], info["fsdp"]) == ("DistributedType.FSDP", 2, True)
    assert info["fused_head"], "under FSDP2 the LM head is an FSDPLinear: the fused head must still take it"
    assert info["resumed_from"] == "checkpoint-2"
    assert info["sharded_head_error"] < 1e-12   # float64: dW of a Shard(0) head = the average of the full dWs
    torch.testing.assert_close(weights, one[0], **TOL)
    from transformers import AutoModelForCausalLM   # the checkpoint holds the full weights, loadable as they are
    ckpt = AutoModelForCausalLM.from_pretrained(tmp_path / "fsdp.pt.run" / "checkpoint-3")
    torch.testing.assert_close(torch.cat([w.flatten() for w in ckpt.state_dict().values()]), weights, rtol=0, atol=0)


def test_a_step_non_finite_on_one_process_is_skipped_by_all(tmp_path):
    "NaN teacher logits on one process only: both processes skip that step together (no hang), then train on."
    out = tmp_path / "nan.pt"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
           "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(SCRIPT), str(out), "--nan-at", "2"]
    subprocess.run(cmd, check=True, env=ENV, timeout=300)
    skipped = [json.loads(Path(f"{out}.rank{rank}.json").read_text())["skipped"] for rank in (0, 1)]
    assert skipped == [1, 1], skipped
