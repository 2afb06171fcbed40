"""Whole stages on a tiny world: resume after a kill, atomic checkpoints, 2-process torchrun runs."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
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
from larr.training.loop import atomic_torch_save, batch_indices

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
    "ctr": {"backbone": {"embedding_dim": 4, "mlp_hidden": [16], "cross_layers": 1}, "agg_dim": 16, "agg_layers": 1,
            "batch_size": 128, "max_epochs": 1, "variants": ["larr", "id_only", "no_stage1", "no_stage2", "no_alignment", "full_text"]},
}


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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def read_losses(path: Path) -> dict[int, float]:
    with path.open() as handle:
        return {int(float(r["step"])): float(r["loss"]) for r in csv.DictReader(handle)}


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


def test_every_stage_under_torchrun_two_processes(tiny_setup, tmp_path):
    _, config = tiny_setup
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for stage in ("pretrain", "embed", "ctr"):
        port = str(free_port())
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
                   "-m", f"larr.training.{stage}", "--config", str(config), "--out", str(out)]
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"pretrain", "embed", "ctr"}
    assert metrics["pretrain"]["eval_loss_after"] < metrics["pretrain"]["eval_loss_before"]
    assert set(metrics["embed"]["recall@10"]) == {"stage1", "stage2", "no_stage1"}
    for variant in TINY["ctr"]["variants"]:
        assert 0.0 <= metrics["ctr"][variant]["auc"] <= 1.0
        assert (out / "ctr" / variant / "model.safetensors").exists()
    assert (out / "embed" / "model" / "encoder" / "model.safetensors").exists()
    assert not np.isnan(metrics["ctr"]["larr"]["logloss"])
