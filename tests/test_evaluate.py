"""Evaluation across processes, and the experiment trackers writing where a user looks: TensorBoard event files,
a W&B offline run, a trackio database. CPU only, tiny models; notebooks 06 and 06a check the rest."""
import json, os, sqlite3, subprocess, sys, textwrap, time
from pathlib import Path
import pytest
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration
from hybrid_ilrl.metrics import MetricsWriter, log_with

ROWS = [{"step": 1, "kl/token": 0.5, "eval/reward/greedy": 0.25}, {"step": 2, "kl/token": 0.75}]
CONFIG = {"learning_rate": 1e-3, "mode": "hybrid", "reward_weights": [1.0, 0.5]}

def write_rows(out:Path, **kw):
    with MetricsWriter(out, config=CONFIG, **kw) as writer:
        for row in ROWS: writer.write(row)
    assert len((out / "metrics.csv").read_text().splitlines()) == 1 + len(ROWS)  # the CSV stays

def scalars(logdir:Path, tag:str)->list:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    return [(e.step, e.value) for e in EventAccumulator(str(logdir)).Reload().Scalars(tag)]

def test_tensorboard_with_the_trainers_accelerator(tmp_path):
    names = log_with("tensorboard")
    accel = Accelerator(cpu=True, log_with=names, project_config=ProjectConfiguration(
        project_dir=str(tmp_path), logging_dir=str(tmp_path / "tensorboard")))
    write_rows(tmp_path, report_to="tensorboard", accelerator=accel, project="proj")
    assert scalars(tmp_path / "tensorboard" / "proj", "kl/token") == [(1, 0.5), (2, 0.75)]
    assert accel.trackers == []  # closed: finished and removed, the accelerator still usable
    with pytest.raises(ValueError, match=r"asks for \['tensorboard'\] but the accelerator was made without"):
        MetricsWriter(tmp_path / "b", report_to="tensorboard", accelerator=Accelerator(cpu=True))

def test_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is not installed")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb_dir").mkdir()
    write_rows(tmp_path / "run", report_to="wandb")
    runs = list((tmp_path / "wandb_dir" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    keys = (b"kl/token", b"eval/reward/greedy", b"learning_rate")
    for _ in range(60):  # wandb's service may still be writing the records (protobuf) after finish() returns
        data = b"".join(f.read_bytes() for f in runs[0].glob("run-*.wandb"))
        if all(key in data for key in keys): break
        time.sleep(0.5)
    for key in keys: assert key in data, key
    assert not (tmp_path / "run" / "wandb").exists()  # WANDB_DIR wins over output_dir

TRACKIO = """
import sys
from pathlib import Path
from hybrid_ilrl.metrics import MetricsWriter
with MetricsWriter(Path(sys.argv[1]), report_to="trackio", config={"learning_rate": 1e-3}) as writer:
    for step in (1, 2): writer.write({"step": step, "kl/token": 0.25 * step})
"""

def test_trackio_offline(tmp_path):
    pytest.importorskip("trackio", reason="trackio is not installed")
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", TRACKIO, str(tmp_path / "run")], env=env, capture_output=True,
                          text=True, timeout=300)
    if done.returncode and any(w in done.stderr.lower() for w in ("connection", "network", "resolve host")):
        pytest.skip(f"trackio does not run offline here: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr[-2000:]
    db = sqlite3.connect(tmp_path / "trackio" / "hybrid_ilrl.db")
    rows = db.execute("select step, metrics from metrics order by step").fetchall()
    assert [(step, json.loads(m)["kl/token"]) for step, m in rows] == [(1, 0.25), (2, 0.5)]

EVAL = """
import json, sys
from accelerate import Accelerator
from hybrid_ilrl.evaluate import evaluate
from hybrid_ilrl.rollout import char_tokenizer, tiny_llama

def overlap(prompts, completions, answer, **kw):
    return [len(set(c) & set(a)) / len(set(a)) for c, a in zip(completions, answer)]
def distinct(prompts, completions, **kw): return [len(set(c)) / 10 for c in completions]

def run(accel=None):
    tok = char_tokenizer()
    rows = [{"prompt": f"copy: {w} =", "answer": w} for w in ["abc", "xyz", "hello", "tree", "go"]]  # shares 3 + 2
    student, teacher = tiny_llama(tok, seed=0), tiny_llama(tok, hidden=96, seed=1)
    return evaluate(student, tok, rows, [overlap, distinct], [1.0, 0.5], teacher, max_completion_length=6,
                    temperature=0.7, batch_size=2, seed=5, accelerator=accel)

if __name__ == "__main__":
    accel = Accelerator(cpu=True)
    assert accel.num_processes == 2, accel.num_processes
    res = run(accel)
    json.dump(res, open(f"{sys.argv[1]}.{accel.process_index}.json", "w"))
    accel.end_training()   # destroys the process group: a gloo group left to die with the process can abort it
"""

def test_evaluate_two_processes_match_one(tmp_path):
    script = tmp_path / "eval_ddp.py"
    script.write_text(EVAL)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
              str(tmp_path / "two")]  # (`accelerate launch --cpu` starts one process whatever --num_processes says)
    subprocess.run(launch, check=True, env=env, timeout=300)
    ns = {}
    exec(EVAL, ns)
    one = ns["run"]()
    twos = [json.loads((tmp_path / f"two.{rank}.json").read_text()) for rank in (0, 1)]
    assert twos[0] == twos[1]  # every process gets the same dict
    assert twos[0].keys() == one.keys() and "eval/kl/token" in one and "eval/reward/sampled/overlap" in one
    for key in one: assert twos[0][key] == pytest.approx(one[key], rel=1e-5, abs=1e-7), key
