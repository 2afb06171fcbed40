"""The config reference (docs/config-reference.md) is what the dataclasses say, and ``--data`` overrides ``data``."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path

from larr.cli import main
from larr.training.config import TrainConfig, load_config, to_dict
from larr.training.config_reference import config_reference
from larr.training.runner import config_from_args, configure_train_parser

ROOT = Path(__file__).resolve().parents[3]
REFERENCE = ROOT / "docs" / "config-reference.md"


def leaf_fields(cls: type, prefix: str = ""):
    """(dotted key, field) of every non-section field, depth first."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            yield from leaf_fields(hints[f.name], f"{key}.")
        else:
            yield key, f


def flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_the_committed_reference_is_the_generated_one():
    assert REFERENCE.read_text(encoding="utf-8") == config_reference(), (
        "docs/config-reference.md is stale: run `larr config reference --out docs/config-reference.md`"
    )


def test_every_key_has_help_and_a_row():
    text = config_reference()
    for key, f in leaf_fields(TrainConfig):
        assert f.metadata.get("help"), f"{key} has no help text (field metadata 'help')"
        assert f"| `{key}` |" in text


def test_the_reference_lists_exactly_the_keys_a_config_takes():
    keys = set(flat(to_dict(TrainConfig())))
    assert {key for key, _ in leaf_fields(TrainConfig)} == keys
    # every listed key is accepted as an override (spelled as the reference spells it)
    for key, value in flat(to_dict(TrainConfig())).items():
        load_config(None, {key: value})


def test_cli_prints_the_reference(capsys):
    assert main(["config", "reference"]) == 0
    assert capsys.readouterr().out == config_reference()


def test_data_flag_overrides_the_configs_data(tmp_path):
    parser = argparse.ArgumentParser()
    configure_train_parser(parser)
    shipped = config_from_args(parser.parse_args(["all", "--config", "tiny", "--out", str(tmp_path)]))
    args = parser.parse_args(["all", "--config", "tiny", "--out", str(tmp_path), "--data", "/my/data", "--set", "seed=7"])
    config = config_from_args(args)
    assert shipped.data == "runs/data/synth"
    assert config.data == "/my/data" and config.seed == 7
    assert config.ctr == shipped.ctr  # nothing else moved
