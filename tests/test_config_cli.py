"Settings and inputs: every Config field refused by name, alike from Python, YAML and `--set`; prompts; rewards."
import json, os, subprocess, sys
from dataclasses import fields
from pathlib import Path
import pytest, yaml
from hybrid_ilrl.config import Config, ConfigError
from hybrid_ilrl.cli import import_fn, main, run
from hybrid_ilrl.config import load_prompts

# field: (a wrong value as YAML text, what the message says); Python gets yaml.safe_load of the same text
WRONG = dict(
    mode=("ppo", "config.mode='ppo': expected one of"), beta=("-1", "config.beta=-1.0: must be >= 0"),
    lam=("lots", "config.lam='lots': expected a float"),
    estimator=("[rb]", "config.estimator=['rb']: expected a string"),
    baseline=("max", "config.baseline='max': expected one of"),
    num_generations=("2.5", "config.num_generations=2.5: expected an int"),
    per_device_train_batch_size=("-3", "config.per_device_train_batch_size=-3: must be >= 1"),
    gradient_accumulation_steps=("0", "config.gradient_accumulation_steps=0: must be >= 1"),
    generation_batch_size=("0", "config.generation_batch_size=0: must be >= 1"),
    teacher_batch_size=("1.5", "config.teacher_batch_size=1.5: expected an int"),
    max_prompt_length=("0", "config.max_prompt_length=0: must be >= 1"),
    max_completion_length=("true", "config.max_completion_length=True: expected an int"),
    temperature=("1e-8", "config.temperature=1e-08: must be >= 0.001"),
    loss_norm=("mean", "config.loss_norm='mean': expected one of"),
    learning_rate=("abc", "config.learning_rate='abc': expected a float"),
    weight_decay=("-1e-2", "config.weight_decay=-0.01: must be >= 0"),
    lr_scheduler_type=("step", "config.lr_scheduler_type='step': expected one of"),
    warmup_steps=("1.5", "config.warmup_steps=1.5: expected an int"),
    max_grad_norm=(".nan", "config.max_grad_norm=nan: expected a finite number"),
    max_steps=("2.7", "config.max_steps=2.7: expected an int (a whole number), not a fraction"),
    seed=("-1", "config.seed=-1: must be >= 0"),
    bf16=("yes please", "config.bf16='yes please': expected true or false"),
    fp16=("1", "config.fp16=1: expected true or false"),
    logging_steps=("0", "config.logging_steps=0: must be >= 1"),
    report_to=("[mlflow]", "config.report_to=['mlflow']: ['mlflow'] unknown"),
    eval_prompts=("3", "config.eval_prompts=3: expected a string"),
    eval_steps=("-2", "config.eval_steps=-2: must be >= 0"),
    grad_split=("1", "config.grad_split=1: expected true or false"),
    fused_head=("maybe", "config.fused_head='maybe': expected true or false"),
    save_steps=("-1", "config.save_steps=-1: must be >= 0"),
    save_total_limit=("0", "config.save_total_limit=0: must be >= 1 (the newest N checkpoints are kept"),
    output_dir=("null", "config.output_dir=None: expected a string"),
    resume_from_checkpoint=("2", "config.resume_from_checkpoint=2: expected bool or str"),
    overwrite_output_dir=("2", "config.overwrite_output_dir=2: expected true or false"),
    max_skipped_steps=("0", "config.max_skipped_steps=0: must be >= 1"),
    allow_inf=("[]", "config.allow_inf=[]: expected true or false"),
    progress=("null", "config.progress=None: expected true or false"),
    reward_weights=("[1, .inf]", "config.reward_weights[1]=inf: expected a finite number"),
    student=("3", "config.student=3: expected a string"),
    teacher=("{a: 1}", "config.teacher={'a': 1}: expected a string"),
    prompts=("[a.jsonl]", "config.prompts=['a.jsonl']: expected a string"),
    reward_fns=("my_rewards:fn", "config.reward_fns='my_rewards:fn': expected a list"))

# old name: (a wrong value as YAML text, the message); the old names still load, moved to TRL's (a FutureWarning)
WRONG_OLD = dict(group_size=("2.5", "config.num_generations=2.5: expected an int"),
                 prompts_per_step=("-3", "config.prompts_per_step=-3: must be >= 1"),
                 tau=("1e-8", "config.temperature=1e-08: must be >= 0.001"),
                 tensorboard=("enabled", "config.tensorboard='enabled': expected true or false"))

def message(f)->str:
    "The message of the `ConfigError` (or `SystemExit`) that `f()` raises."
    with pytest.raises((ConfigError, SystemExit)) as e: f()
    return str(e.value)


def test_every_field_is_checked():
    assert set(WRONG) == {f.name for f in fields(Config)}


@pytest.mark.parametrize("name", sorted(WRONG))
def test_wrong_value_same_message_from_python_yaml_and_cli(name, tmp_path):
    text, msg = WRONG[name]
    api = message(lambda: Config(**{name: yaml.safe_load(text)}))
    assert msg in api
    (tmp_path / "run.yaml").write_text(f"{name}: {text}\n")
    assert message(lambda: Config.load(tmp_path / "run.yaml")) == api
    (tmp_path / "ok.yaml").write_text("max_steps: 3\n")
    assert message(lambda: run(["train", "--config", str(tmp_path / "ok.yaml"), "--set", f"{name}={text}"])) == api
    assert message(lambda: main(["train", "--config", str(tmp_path / "ok.yaml"), "--set", f"{name}={text}"])) \
        == f"hybrid-ilrl: error: {api}"


@pytest.mark.parametrize("name", sorted(WRONG_OLD))
def test_old_names_warn_and_are_checked_alike(name, tmp_path):
    text, msg = WRONG_OLD[name]
    with pytest.warns(FutureWarning, match=f"config.{name} is deprecated"):
        api = message(lambda: Config(**{name: yaml.safe_load(text)}))
    assert msg in api
    (tmp_path / "run.yaml").write_text(f"{name}: {text}\n")
    with pytest.warns(FutureWarning): assert message(lambda: Config.load(tmp_path / "run.yaml")) == api


def test_old_names_give_the_same_config(tmp_path):
    old = dict(group_size=2, max_new_tokens=9, tau=0.7, log_steps=3, lr=1e-4, steps=7, lr_schedule="cosine",
               max_prompt_len=50, resume=True, tensorboard=True)
    new = dict(num_generations=2, max_completion_length=9, temperature=0.7, logging_steps=3, learning_rate=1e-4,
               max_steps=7, lr_scheduler_type="cosine", max_prompt_length=50, resume_from_checkpoint=True,
               report_to=["tensorboard"])
    with pytest.warns(FutureWarning) as caught: cfg = Config(**old)
    assert cfg == Config(**new)
    said = {str(w.message) for w in caught}
    assert all(any(f"config.{o} is deprecated: use config.{n}" in m for m in said) for o, n in zip(old, new))
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(old))
    with pytest.warns(FutureWarning): assert Config.load(tmp_path / "old.yaml") == cfg
    with pytest.warns(FutureWarning, match="use config.num_generations"): assert cfg.group_size == 2


def test_rules_across_fields():
    assert "baseline='loo' needs num_generations >= 2" in message(lambda: Config(num_generations=1))
    Config(num_generations=1, baseline="mean")
    assert "must be whole groups, a multiple of num_generations=3" in \
        message(lambda: Config(num_generations=3, per_device_train_batch_size=4, gradient_accumulation_steps=1))
    assert "config.bf16 and config.fp16 are both true" in message(lambda: Config(bf16=True, fp16=True))
    assert "config.seed=134217728: must be < 2**27" in message(lambda: Config(seed=2**27))
    assert "config.reward_weights has 1 weights for 2 reward_fns" in \
        message(lambda: Config(reward_fns=["m:a", "m:b"], reward_weights=[1.0]))
    assert "config.reward_fns[1]='m.b': expected a 'module:function'" in \
        message(lambda: Config(reward_fns=["m:a", "m.b"]))
    assert Config(reward_weights=[1, "2e-1"]).reward_weights == [1.0, 0.2]


def test_yaml_numbers_are_read_as_numbers(tmp_path):
    (tmp_path / "run.yaml").write_text("learning_rate: 1e-5\nmax_steps: 1e2\nbeta: 0\n")
    cfg = Config.load(tmp_path / "run.yaml")
    assert (cfg.learning_rate, cfg.max_steps, cfg.beta) == (1e-5, 100, 0.0)
    assert type(cfg.max_steps) is int and type(cfg.beta) is float


def test_config_file_must_be_a_mapping(tmp_path):
    (tmp_path / "list.yaml").write_text("- learning_rate: 1e-5\n")
    assert f"{tmp_path / 'list.yaml'}: expected a mapping of Config fields" in message(
        lambda: Config.load(tmp_path / "list.yaml"))
    (tmp_path / "scalar.json").write_text("3")
    assert "scalar.json: expected a mapping" in message(lambda: Config.load(tmp_path / "scalar.json"))
    typo = _write(tmp_path / "typo.yaml", "lamda: 1\n")
    want = f"unknown config keys in {typo}: ['lamda'] ('lamda': did you mean 'lam'?)"
    assert message(lambda: Config.load(typo)) == want


def _write(path:Path, text:str)->Path:
    path.write_text(text)
    return path


def test_set_without_equals_names_the_argument(tmp_path):
    cfg = _write(tmp_path / "run.yaml", "max_steps: 3\n")
    assert message(lambda: run(["train", "--config", str(cfg), "--set", "max_steps"])) == \
        "--set 'max_steps': expected KEY=VALUE, e.g. --set max_steps=100"
    assert "unknown config keys in the overrides (--set): ['stpes']" in \
        message(lambda: run(["train", "--config", str(cfg), "--set", "stpes=3"]))


def test_console_script_prints_the_message(tmp_path):
    cfg = _write(tmp_path / "run.yaml", "max_steps: 3\n")
    script = Path(sys.executable).parent / "hybrid-ilrl"
    if not script.exists(): pytest.skip("the hybrid-ilrl console script is not installed")
    res = subprocess.run([str(script), "train", "--config", str(cfg), "--set", "learning_rate=abc"],
                         capture_output=True, text=True)
    assert res.returncode == 1 and res.stderr.strip() == \
        "hybrid-ilrl: error: config.learning_rate='abc': expected a float"
    assert "Traceback" not in res.stderr


# ---- prompts

def test_prompt_formats(tmp_path):
    rows = [dict(prompt="copy: a, b =", answer="ab"), dict(prompt="copy: c =", answer="c")]
    assert load_prompts(_write(tmp_path / "p.jsonl", "\n".join(map(json.dumps, rows)) + "\n\n")) == rows
    assert load_prompts(_write(tmp_path / "p.json", json.dumps(rows))) == rows
    assert load_prompts(_write(tmp_path / "p.csv", 'prompt,answer\n"copy: a, b =",ab\ncopy: c =,c\n')) == rows
    txt = _write(tmp_path / "p.txt", "copy: a, b =\n\ncopy: c =\n")
    assert load_prompts(txt) == [dict(prompt=r["prompt"]) for r in rows]
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    pd.DataFrame(rows).to_parquet(tmp_path / "p.parquet")
    assert load_prompts(tmp_path / "p.parquet") == rows
    datasets = pytest.importorskip("datasets")
    assert load_prompts(datasets.Dataset.from_list(rows)) == rows


def test_csv_header_is_not_a_prompt(tmp_path):
    got = load_prompts(_write(tmp_path / "p.csv", "prompt\nhello\n"))
    assert got == [dict(prompt="hello")]


@pytest.mark.parametrize("name,text,msg", [
    ("bad.jsonl", '{"prompt": "a"}\n\n{"prompt": "b",\n', "bad.jsonl, line 3: not valid JSON"),
    ("gap.jsonl", '{"prompt": "a", "answer": "x"}\n{"prompt": "b"}\n',
     "column 'answer' is missing (or null) in line 2"),
    ("late.jsonl", '{"prompt": "a"}\n{"prompt": "b", "answer": "x"}\n',
     "column 'answer' is missing (or null) in line 1"),
    ("null.json", '[{"prompt": "a", "answer": null}]', "column 'answer' is missing (or null) in item 0"),
    ("num.jsonl", '{"prompt": 42}\n', "num.jsonl, line 1: 'prompt' is 42: expected a string"),
    ("noprompt.json", '[{"question": "a"}]', "noprompt.json, item 0: 'prompt' is None: expected a string"),
    ("dict.json", '{"prompt": "a"}', "dict.json: expected a list of prompts"),
    ("short.csv", "prompt,answer\nx,1\ny\n", "short.csv: column 'answer' is missing (or null) in line 3"),
    ("long.csv", "prompt\nx,1\n", "long.csv, line 2: more cells than the header"),
    ("empty.jsonl", "\n\n", "no prompts in"),
    ("empty.csv", "", "no prompts in"),
    ("p.tsv", "prompt\tanswer\n", "p.tsv: unknown prompts format '.tsv'"),
])
def test_bad_prompt_files_are_named(tmp_path, name, text, msg):
    path = _write(tmp_path / name, text)
    got = message(lambda: load_prompts(path))
    assert msg in got and (name in got or "no prompts" in msg)


def test_missing_optional_readers(tmp_path, monkeypatch):
    path = _write(tmp_path / "p.parquet", "not parquet")
    monkeypatch.setitem(sys.modules, "pandas", None)
    assert "pip install pandas pyarrow" in message(lambda: load_prompts(path))
    monkeypatch.setitem(sys.modules, "datasets", None)
    assert message(lambda: load_prompts("hf:gsm8k:train")) == \
        "prompts='hf:gsm8k:train' needs Hugging Face `datasets`: pip install datasets"
    assert "does not exist" in message(lambda: load_prompts(tmp_path / "none.jsonl"))


# ---- reward functions

def test_import_fn_refuses_what_is_not_a_reward_function(tmp_path):
    _write(tmp_path / "rewards_t1.py", "def ok(prompts, completions, **kw): return [0.0] * len(completions)\n"
                                       "def one(x): return x\nVALUE = 3\n")
    assert import_fn("rewards_t1:ok", [tmp_path])(["p"], ["c", "d"]) == [0.0, 0.0]
    assert "rewards_t1 has no function 'VALUE'" in message(lambda: import_fn("rewards_t1:VALUE", [tmp_path]))
    assert "rewards_t1 has no function 'nope'" in message(lambda: import_fn("rewards_t1:nope", [tmp_path]))
    assert "expected f(prompts, completions, **columns), got one(x)" in message(lambda: import_fn("rewards_t1:one"))
    assert "no module 'rewards_absent'" in message(lambda: import_fn("rewards_absent:fn", [tmp_path]))
    assert "expected 'module:function'" in message(lambda: import_fn(":fn"))


def _tiny_run(d:Path)->Path:
    "Saved tiny student/teacher, prompts, and a config in d/conf/ naming `my_rewards:fn` next to it."
    from hybrid_ilrl.rollout import char_tokenizer, tiny_llama
    tok = char_tokenizer()
    tiny_llama(tok, seed=0).save_pretrained(d / "student")
    tok.save_pretrained(d / "student")
    tiny_llama(tok, hidden=48, seed=1).save_pretrained(d / "teacher")
    (d / "conf").mkdir()
    _write(d / "conf" / "my_rewards.py", "import os\n"
           "def fn(prompts, completions, answer, **kw):\n"
           "    open(os.environ['REWARD_MARK'], 'a').write('called\\n')\n"
           "    return [float(c[:1] == a[:1]) for c, a in zip(completions, answer)]\n")
    _write(d / "prompts.csv", "prompt,answer\ncopy: ab =,ab\ncopy: xy =,xy\n")
    cfg = dict(mode="hybrid", student=str(d / "student"), teacher=str(d / "teacher"),
               prompts=str(d / "prompts.csv"), reward_fns=["my_rewards:fn"], max_steps=1,
               num_generations=2, per_device_train_batch_size=4, gradient_accumulation_steps=1,
               max_completion_length=3, progress=False)
    return _write(d / "conf" / "run.yaml", yaml.safe_dump(cfg))


def test_reward_module_next_to_config_same_under_script_and_python_m(tmp_path):
    "`my_rewards.py` beside the config is found by the console script as by `python -m`, from another directory."
    script = Path(sys.executable).parent / "hybrid-ilrl"
    if not script.exists(): pytest.skip("the hybrid-ilrl console script is not installed")
    cfg = _tiny_run(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for i, cmd in enumerate([[str(script)], [sys.executable, "-m", "hybrid_ilrl.cli"]]):
        mark = tmp_path / f"mark{i}"
        env = {**os.environ, "REWARD_MARK": str(mark)}
        out = tmp_path / f"run{i}"
        res = subprocess.run([*cmd, "train", "--config", str(cfg), "--set", f"output_dir={out}"],
                             cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-2000:]
        assert mark.read_text().count("called") >= 1
        assert (out / "checkpoint-1").is_dir()
