"""The Frappe/BARS runner (``benchmarks/studies/frappe/frappe_bars.py``): its summary maths, then a small-subset run end to end.

The end-to-end run needs the raw data in ``<repo>/../shared/data/frappe`` (research licence, never in the repo)
and skips without it. It keeps users 0..19 (~14k train rows), shrinks every model and trains one seed of
``id_only`` and ``larr``: about a minute on 2 cores. The full benchmark is the documented slow command in
``benchmarks/studies/frappe/results/frappe/results.md``.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
from frappe_bars import BARS_DEEPFM_5_SEEDS, main, summarise

REAL_DIR = Path(__file__).parents[4].parent / "shared/data/frappe"

SMOKE_SETTINGS = [
    "pretrain.max_steps=5",
    "pretrain.block_size=64",
    "pretrain.model={architecture: llama, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, "
    "num_attention_heads: 2, num_key_value_heads: 1, vocab_size: 500}",
    "embed.max_steps=3",
    "embed.batch_size=16",
    "embed.max_length=32",
    "embed.projection_dim=16",
    "embed.eval_pairs=50",
    "ctr.max_epochs=2",
    "ctr.batch_size=1024",
    "ctr.agg_dim=16",
    "ctr.agg_layers=1",
    "ctr.agg_heads=2",
    "ctr.backbone={kind: deepfm, embedding_dim: 8, mlp_hidden: [32], dropout: 0.1, batch_norm: true, "
    "embedding_l2: 0.05}",
    "threads=1",
]


def _result(auc: float, steps: int = 10) -> dict:
    return {"auc": auc, "logloss": 0.2, "gauc": auc - 0.01, "best_valid_auc": auc + 0.001, "steps": steps}


def test_summary_gaps_spread_and_protocol_check():
    per_seed = {
        "id_only": {1: _result(0.9840), 2: _result(0.9844), 3: _result(0.9842)},
        "larr": {1: _result(0.9860), 2: _result(0.9858), 3: _result(0.9865)},
        "no_alignment": {1: _result(0.9841), 2: _result(0.9850), 3: _result(0.9839)},
    }
    summary = summarise(per_seed)

    larr = summary["variants"]["larr"]["auc"]
    assert larr["mean"] == pytest.approx(0.9861)
    assert larr["std"] == pytest.approx(math.sqrt(((0.0001) ** 2 + 0.0003**2 + 0.0004**2) / 2))
    assert larr["per_seed"] == {"1": 0.9860, "2": 0.9858, "3": 0.9865}

    gap = summary["auc_gaps"]["larr"]
    assert gap["vs_id_only"] == pytest.approx(0.9861 - 0.9842)
    assert gap["spread"] == pytest.approx(larr["std"])  # larger than id_only's 0.0002
    assert gap["beats_id_only_beyond_spread"] is True
    assert gap["paired_gap_mean"] == pytest.approx(0.0019)
    assert (gap["seeds_ahead"], gap["seeds_paired"]) == (3, 3)
    assert gap["vs_best_bars"] == pytest.approx(0.9861 - 0.9861)  # FinalMLP, the board's best
    no_alignment = summary["auc_gaps"]["no_alignment"]
    assert no_alignment["beats_id_only_beyond_spread"] is False  # +0.0001 vs std 0.0006
    assert (no_alignment["seeds_ahead"], no_alignment["seeds_paired"]) == (2, 3)  # behind on seed 3

    check = summary["protocol_check"]
    assert check["difference"] == pytest.approx(0.9842 - BARS_DEEPFM_5_SEEDS["auc"])
    assert check["sound"] is True  # 0.00025 above DeepFM's 0.983947, inside 0.001
    assert summarise({"id_only": {1: _result(0.9851)}})["protocol_check"]["sound"] is False  # 0.0012 above
    # FinalMLP is checked against BARS's FinalMLP run (0.986072), not DeepFM
    finalmlp = summarise({"id_only": {1: _result(0.9855)}}, backbone="finalmlp")["protocol_check"]
    assert finalmlp["reference_auc"] == pytest.approx(0.986072)
    assert finalmlp["difference"] == pytest.approx(0.9855 - 0.986072) and finalmlp["sound"] is True


def test_summary_single_seed_has_no_spread():
    summary = summarise({"id_only": {7: _result(0.98)}, "larr": {7: _result(0.99)}})
    assert summary["variants"]["larr"]["auc"]["std"] is None
    assert summary["auc_gaps"]["larr"]["spread"] is None
    assert summary["auc_gaps"]["larr"]["beats_id_only_beyond_spread"] is None


@pytest.mark.skipif(not (REAL_DIR / "frappe.csv").exists(), reason=f"Frappe data absent ({REAL_DIR})")
def test_frappe_bars_smoke_run_end_to_end_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture):
    out, results = tmp_path / "run", tmp_path / "results"
    argv = ["--raw", str(REAL_DIR), "--out", str(out), "--results", str(results), "--limit-users", "20",
            "--seeds", "2021", "--variants", "id_only", "larr"]
    for setting in SMOKE_SETTINGS:
        argv += ["--set", setting]

    assert main(argv) == 0

    report = json.loads((results / "results.json").read_text(encoding="utf-8"))
    variants = report["summary"]["variants"]
    assert set(variants) == {"id_only", "larr"}
    for variant in ("id_only", "larr"):
        assert variants[variant]["seeds"] == [2021]
        # two epochs on 14k rows already separate used apps from random ones
        assert 0.6 < variants[variant]["auc"]["mean"] <= 1.0
        assert variants[variant]["logloss"]["mean"] > 0
    assert report["setup"]["limit_users"] == 20
    # the converted files' sha256, computed here independently: a number that moved on another machine is then
    # told apart from a different conversion
    data = out / "data"
    assert report["setup"]["data_sha256"] == {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in data.iterdir() if p.is_file()}
    assert {"train.csv", "valid.csv", "test.csv"} <= set(report["setup"]["data_sha256"])
    assert (out / "seed_2021" / "embed").is_symlink()  # stage 3 reads the one shared stage-2 embedder
    markdown = (results / "results.md").read_text(encoding="utf-8")
    assert "| `larr` |" in markdown and "| `id_only` |" in markdown
    assert "DESTINE" in markdown and "0.9856" in markdown and "subset: users < 20" in markdown

    # resuming skips every finished (seed, variant) and rewrites the same table
    result_file = out / "seed_2021" / "ctr" / "larr" / "result.json"
    written = result_file.stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 0
    assert "seed 2021: already done ['id_only', 'larr']" in capsys.readouterr().out
    assert result_file.stat().st_mtime_ns == written
    assert json.loads((results / "results.json").read_text(encoding="utf-8"))["summary"] == report["summary"]

    # --report-only re-tabulates a subset of the variants without training; the table keeps the training command
    (results / "results.md").unlink()
    assert main([*argv, "--variants", "id_only", "--report-only"]) == 0  # the later --variants wins
    assert result_file.stat().st_mtime_ns == written
    markdown = (results / "results.md").read_text(encoding="utf-8")
    assert "| `id_only` |" in markdown and "| `larr` |" not in markdown
    command = json.loads((results / "results.json").read_text(encoding="utf-8"))["setup"]["command"]
    assert "--report-only" not in command and "--limit-users 20" in command

    # a different set-up in the same folder is refused, not mixed into the table
    with pytest.raises(ValueError, match="different config"):
        main([*argv, "--set", "ctr.max_epochs=3"])


def test_a_config_key_added_after_the_pin_counts_as_unchanged_only_at_its_default(tmp_path):
    import json as _json

    from frappe_bars import PIN_FILE, BenchmarkPlan, base_config, pin_setup

    plan = BenchmarkPlan(raw=tmp_path, out=tmp_path / "out", results=tmp_path / "results", variants=("id_only",))
    pin_setup(plan, base_config(plan))
    path = plan.out / PIN_FILE
    pinned = _json.loads(path.read_text())
    del pinned["config"]["ctr"]["read_test"]  # as a run pinned before the key existed
    path.write_text(_json.dumps(pinned))
    pin_setup(plan, base_config(plan))  # the key at its default: the same set-up
    changed = BenchmarkPlan(raw=tmp_path, out=plan.out, results=plan.results, variants=("id_only",),
                            overrides={"ctr.read_test": False})
    with pytest.raises(ValueError, match="different config"):
        pin_setup(changed, base_config(changed))


def test_llm_seed_sets_the_stages_1_2_seed_and_one_out_holds_one(tmp_path):
    from frappe_bars import BenchmarkPlan, base_config, parse_args, pin_setup

    plan = parse_args(["--out", str(tmp_path / "out"), "--variants", "id_only", "--llm-seed", "2025"])
    assert base_config(plan).seed == 2025  # what stages 1-2 train with and the pin records as llm_seed
    assert base_config(parse_args(["--variants", "id_only"])).seed != 2025  # the config's own seed otherwise
    pin_setup(plan, base_config(plan))
    other = BenchmarkPlan(raw=plan.raw, out=plan.out, results=plan.results, variants=("id_only",), overrides={"seed": 2026})
    with pytest.raises(ValueError, match="llm_seed"):
        pin_setup(other, base_config(other))
    with pytest.raises(SystemExit):
        parse_args(["--set", "seed=1"])  # the runner owns seeds
