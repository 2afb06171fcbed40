"""Shipped configs that start from another (``base:``): the demo's quick profile is tiny with shorter stages."""

from __future__ import annotations

import pytest
import yaml

from larr.cli import build_parser
from larr.errors import ConfigError
from larr.training.config import CONFIG_DIR, load_config, to_dict

from .test_config_reference import flat

# What the quick profile is for (docs/demo.md): fewer steps and epochs, the method and its baseline only
QUICK_LENGTHS = {"pretrain.max_steps", "embed.max_steps", "ctr.max_epochs"}
QUICK_CHANGES = QUICK_LENGTHS | {"ctr.variants"}


def test_quick_differs_from_tiny_only_in_stage_lengths_and_variants():
    quick, tiny = flat(to_dict(load_config("quick"))), flat(to_dict(load_config("tiny")))
    assert quick.keys() == tiny.keys()
    assert {key for key in quick if quick[key] != tiny[key]} == QUICK_CHANGES
    assert all(quick[key] < tiny[key] for key in QUICK_LENGTHS)
    assert list(quick["ctr.variants"]) == ["larr", "id_only"] and set(quick["ctr.variants"]) < set(tiny["ctr.variants"])


def test_quick_states_only_its_changes():
    written = yaml.safe_load((CONFIG_DIR / "quick.yaml").read_text(encoding="utf-8"))
    assert written.pop("base") == "tiny"
    assert set(flat(written)) == QUICK_CHANGES


def test_a_base_merges_section_by_section_and_the_file_wins(tmp_path):
    (tmp_path / "parent.yaml").write_text("seed: 1\nctr: {max_epochs: 5, batch_size: 64}\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nctr: {max_epochs: 1}\n")
    config = load_config(str(tmp_path / "child.yaml"), {"seed": 3})
    assert (config.seed, config.ctr.max_epochs, config.ctr.batch_size) == (3, 1, 64)


def test_a_base_that_goes_round_in_a_circle_is_a_config_error(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="circle"):
        load_config(str(tmp_path / "a.yaml"))


def test_demo_runs_quick_by_default_and_its_help_names_both_profiles():
    parser = build_parser()
    assert parser.parse_args(["demo"]).config == "quick"
    (commands,) = (action for action in parser._actions if action.dest == "command")
    (config,) = (action for action in commands.choices["demo"]._actions if action.dest == "config")
    assert "'quick' (default, make demo)" in config.help and "'tiny' (make demo-full)" in config.help
