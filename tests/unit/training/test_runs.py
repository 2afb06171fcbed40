"""Whole stages on a tiny world: resume after a kill, atomic checkpoints, 2-process torchrun runs.

What the tests hold every stage to, each against a run of the same stage from the same inputs:

* resume after SIGKILL: the resumed run logs the same losses for every step after its checkpoint and ends with
  the same weights as the uninterrupted run. On CPU with one thread the stages are deterministic, so this is
  exact equality (stages 2 and 3: the child kills itself at a known step; the older stage-1 test kills at
  whatever step it catches and keeps a 1e-5 tolerance);
* DDP: ``torchrun --nproc_per_node 2`` (gloo) logs the loss curve one process logs on the same global batches,
  within ``DDP_RTOL`` — the gradients are the same sums taken in another order (gloo's all-reduce, the gathered
  in-batch negatives), so they differ in the last float bits, and those grow a little over the steps. Model
  dropout draws per-rank masks (training/loop.py), so TINY turns the CTR backbone's off. It is ``slow``
  (``make test-slow``).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from larr.data.schema import write_dataset
from larr.data.synth import SynthConfig, generate
from larr.serving.server.ports import free_port
from larr.training.loop import CHECKPOINT_FILE, atomic_torch_save, batch_indices

TINY = {
    "seed": 5,
    "threads": 1,
    "pretrain": {
        "model": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "num_key_value_heads": 1, "vocab_size": 400},
        "block_size": 32, "batch_size": 8, "max_steps": 40, "warmup_steps": 2, "checkpoint_every": 5,
    },
    "embed": {"max_length": 24, "projection_dim": 16, "batch_size": 8, "max_steps": 6, "warmup_steps": 1,
              "eval_pairs": 40, "checkpoint_every": 3},
    "ctr": {"backbone": {"embedding_dim": 4, "mlp_hidden": [16], "cross_layers": 1, "dropout": 0.0}, "agg_dim": 16,
            "agg_layers": 1, "batch_size": 128, "max_epochs": 1, "checkpoint_every": 3,
            "variants": ["larr", "id_only", "no_stage1", "no_stage2", "no_alignment", "full_text"]},
}
DDP_RTOL = 1e-5  # measured: at most 2.6e-7 relative over every curve of these runs (without the gathered negatives: 0.34)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny_training")
    data = root / "data"
    write_dataset(data, generate(SynthConfig(num_users=30, shops_per_category=2, train_rows=1200, valid_rows=300,
                                             test_rows=300, seed=5)))
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "data": str(data)}))
    return data, config


def larr_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "larr.cli", *args]


def read_losses(path: Path) -> dict[int, float]:
    with path.open() as handle:
        return {int(float(r["step"])): float(r["loss"]) for r in csv.DictReader(handle)}


def stage_cmd(stage: str, config: Path, out: Path, *options: str, processes: int = 1) -> list[str]:
    """One stage's entry point, as one process or under torchrun (the module docstrings' commands)."""
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", str(free_port())]
    return [*launcher, "-m", f"larr.training.{stage}", "--config", str(config), "--out", str(out), *options]


def run_ok(command: list[str]) -> None:
    result = subprocess.run(command, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


# Run a stage's own main() in a child that SIGKILLs itself right after logging step KILL_STEP: a preemption
# with no clean-up at all, at a known step (after a checkpoint, with logged steps past it to be replaced).
KILLED_AT_STEP = """
import os, signal, sys
from larr.training import {stage} as stage
from larr.training.loop import StepLogger
log = StepLogger.log
def log_then_die(self, step, **values):
    log(self, step, **values)
    if step == {step}:
        os.kill(os.getpid(), signal.SIGKILL)
StepLogger.log = log_then_die
sys.exit(stage.main(sys.argv[1:]))
"""


def run_killed(stage: str, kill_step: int, config: Path, out: Path, *options: str) -> None:
    script = KILLED_AT_STEP.format(stage=stage, step=kill_step)
    result = subprocess.run([sys.executable, "-c", script, "--config", str(config), "--out", str(out), *options],
                            env=ENV, capture_output=True, text=True)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]


def checkpoint_state(stage_dir: Path) -> tuple[int, dict[str, torch.Tensor]]:
    state = torch.load(stage_dir / CHECKPOINT_FILE, weights_only=False)
    return state["step"], state["model"]


def assert_same_weights(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(actual[name], tensor), name


def assert_resume_reproduces(reference_dir: Path, resumed_dir: Path, checkpoint_step: int, last_step: int) -> None:
    """Same loss at every step after the checkpoint (logged rows of the killed run replaced, not duplicated),
    same final weights: exact equality, see the module docstring."""
    reference, resumed = read_losses(reference_dir / "steps.csv"), read_losses(resumed_dir / "steps.csv")
    assert sorted(resumed) == sorted(reference) == list(range(1, last_step + 1))
    assert {s: resumed[s] for s in range(checkpoint_step + 1, last_step + 1)} == \
        {s: reference[s] for s in range(checkpoint_step + 1, last_step + 1)}
    reference_step, reference_weights = checkpoint_state(reference_dir)
    resumed_step, resumed_weights = checkpoint_state(resumed_dir)
    assert resumed_step == reference_step == last_step
    assert_same_weights(resumed_weights, reference_weights)


def copy_stages(source: Path, target: Path, *stages: str) -> None:
    for stage in stages:
        shutil.copytree(source / stage, target / stage)
    shutil.copy(source / "config.yaml", target / "config.yaml")


@pytest.fixture(scope="module")
def llm_run(tiny_setup, tmp_path_factory) -> Path:
    """Stages 1 and 2 of TINY, once: what the stage-2 and stage-3 tests start from."""
    _, config = tiny_setup
    out = tmp_path_factory.mktemp("llm_run")
    for stage in ("pretrain", "embed"):
        run_ok(stage_cmd(stage, config, out, "--set", "ctr.variants=[larr]"))
    return out


def test_batches_are_a_function_of_seed_and_step():
    first = [batch_indices(s, 10, 4, seed=1).tolist() for s in range(5)]
    assert first == [batch_indices(s, 10, 4, seed=1).tolist() for s in range(5)]
    epoch0 = sorted(first[0] + first[1] + first[2][:2])
    assert epoch0 == list(range(10))  # one epoch visits every example once
    assert first != [batch_indices(s, 10, 4, seed=2).tolist() for s in range(5)]


def test_kill_mid_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    atomic_torch_save({"step": 1}, path)

    def dies_halfway(obj, handle, *args, **kwargs):
        handle.write(b"partial bytes of a checkpoint")
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left behind


def test_resume_after_kill_gives_the_same_next_step_losses(tiny_setup, tmp_path):
    _, config = tiny_setup
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = tmp_path / "straight"
    subprocess.run(larr_cmd("train", "pretrain", "--config", str(config), "--out", str(straight)), check=True, env=env,
                   capture_output=True)
    reference = read_losses(straight / "pretrain" / "steps.csv")
    assert sorted(reference) == list(range(1, 41))

    killed = tmp_path / "killed"
    process = subprocess.Popen(larr_cmd("train", "pretrain", "--config", str(config), "--out", str(killed)),
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    steps = killed / "pretrain" / "steps.csv"
    while process.poll() is None:  # kill it once it is past its first checkpoint (step 5)
        if steps.exists() and len(steps.read_text().splitlines()) > 8:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    checkpoint_step = torch.load(killed / "pretrain" / "checkpoint.pt", weights_only=False)["step"]
    assert 5 <= checkpoint_step < 40
    subprocess.run(larr_cmd("train", "pretrain", "--config", str(config), "--out", str(killed), "--resume"),
                   check=True, env=env, capture_output=True)
    resumed = read_losses(steps)
    assert sorted(resumed) == list(range(1, 41))  # rows after the checkpoint were replaced, not duplicated
    for step in range(checkpoint_step + 1, 41):
        assert resumed[step] == pytest.approx(reference[step], rel=1e-5, abs=1e-6), step


def test_stage2_resume_after_kill_reproduces_the_uninterrupted_run(tiny_setup, llm_run, tmp_path):
    _, config = tiny_setup
    killed = tmp_path / "killed"
    copy_stages(llm_run, killed, "pretrain")
    only_larr = ("--set", "ctr.variants=[larr]")  # llm_run's own embed run is the uninterrupted one
    run_killed("embed", 5, config, killed, *only_larr)  # TINY: checkpoints at steps 3 and 6 of 6
    assert checkpoint_state(killed / "embed")[0] == 3
    run_ok(stage_cmd("embed", config, killed, "--resume", *only_larr))
    assert_resume_reproduces(llm_run / "embed", killed / "embed", checkpoint_step=3, last_step=6)


def test_stage3_resume_after_kill_reproduces_the_uninterrupted_run(tiny_setup, llm_run, tmp_path):
    _, config = tiny_setup
    # 1200 train rows / batch 128 = 10 steps an epoch; checkpoints every 3 steps: killed at step 14, it resumes
    # from step 12, past epoch 1's validation (best weights, plateau state and history come from the checkpoint)
    options = ("--set", "ctr.variants=[larr]", "--set", "ctr.max_epochs=2")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    for out in (straight, killed):
        copy_stages(llm_run, out, "pretrain", "embed")
    run_ok(stage_cmd("ctr", config, straight, *options))
    run_killed("ctr", 14, config, killed, *options)
    assert checkpoint_state(killed / "ctr" / "larr")[0] == 12
    assert not (killed / "ctr" / "larr" / "result.json").exists()
    run_ok(stage_cmd("ctr", config, killed, "--resume", *options))
    assert_resume_reproduces(straight / "ctr" / "larr", killed / "ctr" / "larr", checkpoint_step=12, last_step=20)
    reference = json.loads((straight / "ctr" / "larr" / "result.json").read_text())
    assert json.loads((killed / "ctr" / "larr" / "result.json").read_text()) == reference  # test AUC, history


def stage_step_logs(stage: str, variants: list[str]) -> list[str]:
    """The steps.csv files a stage writes, relative to the run folder."""
    if stage == "pretrain":
        return ["pretrain/steps.csv"]
    if stage == "embed":
        return ["embed/steps.csv", "embed_no_stage1/steps.csv"]
    return [f"ctr/{variant}/steps.csv" for variant in variants]


@pytest.mark.slow  # 90 s on 2 idle cores (6 stage runs, 3 of them under torchrun) (`make test-slow`)
def test_two_processes_train_the_loss_curve_of_one_on_the_same_global_batch(tiny_setup, tmp_path):
    """Every stage from the same inputs (the one-process run's earlier stages), 1 vs 2 processes."""
    _, config = tiny_setup
    one = tmp_path / "one"
    variants = TINY["ctr"]["variants"]
    done: list[str] = []
    for stage in ("pretrain", "embed", "ctr"):
        two = tmp_path / f"two_{stage}"
        two.mkdir()
        if done:
            copy_stages(one, two, *done)
        run_ok(stage_cmd(stage, config, one))
        run_ok(stage_cmd(stage, config, two, processes=2))
        for log in stage_step_logs(stage, variants):
            single, ddp = read_losses(one / log), read_losses(two / log)
            assert sorted(ddp) == sorted(single) and single, log
            worst = max(abs(ddp[s] - single[s]) / abs(single[s]) for s in single)
            assert worst <= DDP_RTOL, (log, worst)
        assert stage in json.loads((two / "metrics.json").read_text())
        done += ["pretrain"] if stage == "pretrain" else ["embed", "embed_no_stage1"]
    metrics = {out: json.loads((tmp_path / out / "metrics.json").read_text()) for out in ("two_pretrain", "two_ctr")}
    assert metrics["two_pretrain"]["pretrain"]["eval_loss_after"] < metrics["two_pretrain"]["pretrain"]["eval_loss_before"]
    for variant in variants:
        assert (tmp_path / "two_ctr" / "ctr" / variant / "model.safetensors").exists()
        assert not np.isnan(metrics["two_ctr"]["ctr"][variant]["logloss"])


def test_a_model_selection_run_never_scores_the_test_split(tiny_run, tmp_path):
    """ctr.read_test false: the same training (same seed, same validation AUC), no test number in the result."""
    from larr.training.config import load_config
    from larr.training.ctr import run as run_ctr

    results = {}
    for read_test in (True, False):
        out = tmp_path / f"read_test_{read_test}"
        config = load_config(str(tiny_run.run_dir / "config.yaml"),
                             {"ctr.variants": ["id_only"], "ctr.read_test": read_test})
        results[read_test] = run_ctr(config, out)["id_only"]
    assert "auc" in results[True] and not {"auc", "logloss", "gauc"} & set(results[False])
    assert results[False]["best_valid_auc"] == results[True]["best_valid_auc"]
    assert results[False]["steps"] == results[True]["steps"]


def test_stage2_view_kinds_at_weight_zero_reproduce_todays_run_and_report_recall_when_on(tiny_setup, llm_run, tmp_path):
    """Cross-view pairs: explicit zero weights give llm_run's stage 2 bit for bit; weights above zero train and
    report the item-views and persona kinds next to the three others."""
    _, config = tiny_setup
    only_larr = ("--set", "ctr.variants=[larr]")
    zero, on = tmp_path / "zero", tmp_path / "on"
    for out, weights in ((zero, "0"), (on, "1")):
        copy_stages(llm_run, out, "pretrain")
        run_ok(stage_cmd("embed", config, out, *only_larr, "--set", f"embed.weight_item_views={weights}",
                         "--set", f"embed.weight_persona={weights}"))
    def without_time(run: Path) -> list[dict[str, str]]:
        with (run / "embed" / "steps.csv").open() as handle:
            return [{k: v for k, v in row.items() if k != "time"} for row in csv.DictReader(handle)]

    assert without_time(zero) == without_time(llm_run)
    assert_same_weights(checkpoint_state(zero / "embed")[1], checkpoint_state(llm_run / "embed")[1])
    recall = json.loads((on / "metrics.json").read_text())["embed"]["recall@10"]
    for model in ("stage1", "stage2"):
        assert sorted(recall[model]) == ["item_item", "item_views", "persona", "user_item", "user_user"]
    with (on / "embed" / "steps.csv").open() as handle:
        assert {"loss_item_views", "loss_persona"} <= set(next(csv.DictReader(handle)))
