"""Fault injection for long runs (issue 14): `kill -9` during training and during a checkpoint write, damaged
checkpoints, divergence, huge rewards, two runs in one directory, a fresh run in a used one, a changed config on
resume, nothing to resume, and a crafted `trainer_state.pt`. Each case checks the outcome: an exact resume, a named
error, nothing lost. Tiny models on CPU."""
import csv, json, os, random, signal, subprocess, sys, time, warnings
from pathlib import Path
import pytest, torch
from hybrid_ilrl.rollout import char_tokenizer, tiny_llama
from hybrid_ilrl.config import Config
from hybrid_ilrl.trainer import Trainer, CheckpointError, checkpoints, read_checkpoint, write_manifest

TOK = char_tokenizer()
PROMPTS = [{"prompt": f"copy: {w} =", "answer": w} for w in ["abc", "xyz", "hello", "tree", "blue", "moon"]]
STEPS = 5

def reward(prompts, completions, answer, **kw):
    return [float(c.strip()[:1] == a[:1]) + 0.1 * len(c) for c, a in zip(completions, answer)]

def make(out, rewards=(reward,), **kw):
    cfg = dict(mode="hybrid", max_steps=STEPS, save_steps=1, num_generations=2, per_device_train_batch_size=4,
               gradient_accumulation_steps=1, max_completion_length=4, learning_rate=1e-3, output_dir=str(out),
               progress=False) | kw
    return Trainer(tiny_llama(TOK, seed=0), tiny_llama(TOK, hidden=48, seed=1), TOK, PROMPTS, list(rewards),
                   Config(**cfg))

def flat(t): return torch.cat([p.detach().flatten() for p in t.model.parameters()])

# the same run as `make`, in a subprocess that reports its progress: "STEP n" after each step, "WRITE" at each fsync
# of a checkpoint write (slowed by argv[4] seconds so that a kill can land inside one)
SCRIPT = '''
import sys, time, torch
import hybrid_ilrl.trainer as T
sys.path.insert(0, sys.argv[5])
from test_faults import make
out, steps, resume, slow = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", float(sys.argv[4])
fsync, step = T._fsync, T.Trainer.train_step
def slow_fsync(path):
    print("WRITE", flush=True)
    time.sleep(slow)
    fsync(path)
def loud_step(self):
    stats = step(self)
    print("STEP", self.step, flush=True)
    return stats
T._fsync, T.Trainer.train_step = slow_fsync, loud_step
t = make(out, max_steps=steps, resume_from_checkpoint=resume, overwrite_output_dir=sys.argv[6] == "1")
t.train()
torch.save({"params": [p.detach() for p in t.model.parameters()], "adam": t.opt.state_dict()["state"]},
           out + ".final.pt")
'''

def launch(tmp_path, out, steps=STEPS, resume=False, slow=0.0, overwrite=False):
    script = tmp_path / "run_script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    args = [sys.executable, str(script), str(out), str(steps), str(int(resume)), str(slow), str(Path(__file__).parent),
            str(int(overwrite))]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)

def kill_after(proc, marker:str, n:int, delay:float)->bool:
    "Read the run's output to the `n`-th line starting with `marker`, wait `delay` s, `kill -9` it: did the kill land?"
    seen = 0
    for line in proc.stdout:
        seen += line.startswith(marker)
        if seen == n:
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)
            break
    return proc.wait() == -signal.SIGKILL

def metrics(out)->list[dict]:
    "metrics.csv without the timing columns, which differ from run to run."
    with open(Path(out) / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if not k.startswith("perf/")} for row in csv.DictReader(f)]

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    "An uninterrupted run in a subprocess: final weights, Adam state, metrics."
    tmp = tmp_path_factory.mktemp("ref")
    proc = launch(tmp, tmp / "run")
    proc.communicate()
    assert proc.returncode == 0
    return torch.load(str(tmp / "run") + ".final.pt"), metrics(tmp / "run")

def assert_same_run(out, reference):
    want, want_rows = reference
    got = torch.load(str(out) + ".final.pt")
    assert all(torch.equal(a, b) for a, b in zip(got["params"], want["params"]))   # bit for bit
    assert got["adam"].keys() == want["adam"].keys()
    for i in want["adam"]:
        assert all(torch.equal(got["adam"][i][k], want["adam"][i][k]) for k in want["adam"][i])
    assert metrics(out) == want_rows                                               # each step once, same values

@pytest.mark.parametrize("marker, most, slow", [("STEP", STEPS - 1, 0.0), ("WRITE", 8 * STEPS, 0.02)])
def test_kill_then_resume_is_exact(tmp_path, reference, marker, most, slow):
    "kill -9 at a random moment of training, or inside a checkpoint write; the resumed run ends as an unbroken one."
    rng = random.Random()
    n, delay = rng.randint(1, most), rng.uniform(0, 0.3 if marker == "STEP" else slow)
    out = tmp_path / "run"
    while not kill_after(launch(tmp_path, out, overwrite=True, slow=slow), marker, n, delay):
        delay /= 2  # the run ended first: kill it sooner
    proc = launch(tmp_path, out, resume=True)
    proc.communicate()
    assert proc.returncode == 0, f"resume after a kill at {marker} {n} + {delay:.3f}s failed"
    assert_same_run(out, reference)

@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    "The parameters after 3 uninterrupted steps, in this process."
    t = make(tmp_path_factory.mktemp("straight") / "run", max_steps=3)
    t.train()
    return flat(t)

NAN = b"\x00\x00\xc0\x7f"
DAMAGE = {"truncated": lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:100]),
          "nan bytes": lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:-64]
                                                                       + NAN * 16),
          "emptied": lambda d: [p.unlink() for p in d.iterdir()],
          "no manifest": lambda d: (d / "manifest.json").unlink()}

@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_newest_checkpoint_is_named_and_skipped(tmp_path, straight, damage):
    out = tmp_path / "run"
    make(out, max_steps=3, save_total_limit=3).train()
    DAMAGE[damage](out / "checkpoint-3")
    (out / "checkpoint-best1").mkdir()                        # a stray name: ignored
    with pytest.warns(UserWarning, match=r"checkpoint-3: .*; resuming from checkpoint-2"):
        t = make(out, max_steps=3, resume_from_checkpoint=True)
    assert t.step == 2
    t.train()                                                 # step 3 again: the same as the uninterrupted run
    assert torch.equal(flat(t), straight)
    read_checkpoint(out / "checkpoint-3")                     # rewritten, intact

def test_diverging_run_stops_by_name_and_never_saves_nan(tmp_path):
    "lr=1e10 overflows the logits at step 2 (in this build lr=1e3 saturates the tiny model but stays finite)."
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match=r"3 steps in a row .* step 4: student logits contain NaN.*"
                                               r"the learning rate: learning_rate=1e\+10"):
            make(out, learning_rate=1e10).train()
    assert [d.name for d in checkpoints(out)] == ["checkpoint-2", "checkpoint-3"]
    for d in checkpoints(out):
        sd, _ = read_checkpoint(d)                            # intact, every weight finite
        assert all(torch.isfinite(w).all() for w in sd.values())
    rows = metrics(out)
    assert [row["skipped/steps"] for row in rows] == ["0", "1", "2"]   # counted in the metrics

def test_nan_weights_are_never_saved(tmp_path):
    out = tmp_path / "run"
    t = make(out)
    t.train_step()
    t.save_checkpoint()
    with torch.no_grad(): t.model.lm_head.weight[3, 5] = float("nan")
    t.train_step()                                            # NaN logits: skipped
    assert t.skipped == 1
    with pytest.raises(RuntimeError,
                       match=r"refusing to write checkpoint-2 .* non-finite values in \['lm_head\.weight'\]"):
        t.save_checkpoint()
    assert [d.name for d in checkpoints(out)] == ["checkpoint-1"] and not list(out.glob(".tmp-*"))

def test_huge_reward_stops_by_name(tmp_path):
    def huge(prompts, completions, **kw): return [1e30 * (1 + len(c)) for c in completions]
    t = make(tmp_path / "run", rewards=[huge])
    before = flat(t).clone()
    with pytest.warns(RuntimeWarning, match="skipped step 1: loss .*, gradient norm inf"):
        with pytest.raises(RuntimeError, match=r"step 3: .*the reward magnitude: max \|R\| = [0-9.e+]+ with lam=1"):
            t.train()
    assert torch.equal(flat(t), before) and t.opt.state_dict()["state"] == {}   # never a silent no-op step

def test_second_run_in_a_used_directory_is_refused(tmp_path):
    out = tmp_path / "run"
    proc = launch(tmp_path, out, steps=10_000)
    try:
        for line in proc.stdout:
            if line.startswith("STEP"): break
        with pytest.raises(RuntimeError, match=f"output_dir {out} is in use by another run \\(pid {proc.pid}"):
            make(out).train()
        assert proc.poll() is None                            # the first run goes on, undisturbed
    finally:
        proc.kill()
        proc.wait()

def test_fresh_run_in_a_used_directory(tmp_path):
    out = tmp_path / "run"
    make(out, max_steps=4, save_steps=2).train()
    before = sorted(p.name for p in out.iterdir()), (out / "metrics.csv").read_text()
    with pytest.raises(FileExistsError, match=r"holds another run's results \(checkpoint-2, checkpoint-4, "
                                              r"metrics.csv, final\).*overwrite_output_dir=True"):
        make(out, max_steps=2).train()
    assert (sorted(p.name for p in out.iterdir()), (out / "metrics.csv").read_text()) == before   # nothing lost
    make(out, max_steps=2, overwrite_output_dir=True).train()
    assert [d.name for d in checkpoints(out)] == ["checkpoint-1", "checkpoint-2"]
    assert [row["step"] for row in metrics(out)] == ["1", "2"]
    assert read_checkpoint(out / "checkpoint-2")[1]["step"] == 2

def test_resume_with_a_changed_run_is_refused(tmp_path):
    out = tmp_path / "run"
    make(out, max_steps=2).train()
    with pytest.raises(ValueError,
                       match=r"changes the run: learning_rate 0.001 -> 0.01; resume with the checkpoint's values"):
        make(out, max_steps=4, resume_from_checkpoint=True, learning_rate=1e-2)
    t = make(out, max_steps=4, resume_from_checkpoint=True, logging_steps=2,
             report_to="tensorboard")                         # settings that do not change the run
    assert t.step == 2

def test_resume_with_nothing_says_so(tmp_path):
    with pytest.warns(UserWarning,
                      match=r"resume_from_checkpoint=True, but .* holds no checkpoint: nothing to resume"):
        t = make(tmp_path / "run", resume_from_checkpoint=True)
    assert t.step == 0

def test_crafted_trainer_state_does_not_run(tmp_path):
    out, marker = tmp_path / "run", tmp_path / "pwned"
    make(out, max_steps=2).train()
    class Payload:
        def __reduce__(self): return (os.mkdir, (str(marker),))
    state = torch.load(out / "checkpoint-2" / "trainer_state.pt", weights_only=True)
    torch.save(state | {"step": Payload()}, out / "checkpoint-2" / "trainer_state.pt")
    write_manifest(out / "checkpoint-2")                      # an attacker can write a matching manifest too
    with pytest.warns(UserWarning, match=r"checkpoint-2/trainer_state.pt refused by torch.load\(weights_only=True\)"):
        t = make(out, max_steps=2, resume_from_checkpoint=True)
    assert t.step == 1 and not marker.exists()                # the previous checkpoint; the payload never ran
    for d in checkpoints(out)[:-1]: (d / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="no checkpoint in .* is usable"):
        make(out, max_steps=2, resume_from_checkpoint=True)
    assert not marker.exists()
