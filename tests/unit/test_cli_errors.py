"""The CLI's answer to a user's mistake: one line ``larr <command>: <message>`` on stderr and exit 2, no
traceback (``--debug`` shows it); a bug (any other exception) keeps its traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from larr.cli import main
from larr.data.schema import write_dataset
from larr.data.synth import SynthConfig, generate
from larr.errors import ConfigError, DataValidationError, MissingInputError, UserError


@pytest.fixture(scope="module")
def small_world():
    return generate(SynthConfig(num_users=20, shops_per_category=2, train_rows=300, valid_rows=50, test_rows=80, seed=7))


@pytest.fixture
def bad_label_data(tmp_path: Path, small_world) -> Path:
    """A dataset whose train.csv line 3 has the label 4."""
    root = tmp_path / "data"
    write_dataset(root, small_world)
    path = root / "train.csv"
    rows = path.read_text(encoding="utf-8").splitlines()
    fields = rows[2].split(",")
    fields[rows[0].split(",").index("label")] = "4"
    rows[2] = ",".join(fields)
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def one_line_error(capsys, argv: list[str]) -> str:
    """Run ``larr argv``; assert exit 2 and exactly one line on stderr; return it."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_bad_data_is_one_line_naming_file_line_and_column(capsys, bad_label_data):
    line = one_line_error(capsys, ["data", "validate", str(bad_label_data)])
    assert line.startswith("larr data validate: ")
    assert f"{bad_label_data / 'train.csv'}: line 3: column 'label': '4' is not 0 or 1" in line


def test_training_before_the_data_exists_says_what_to_run(capsys, tmp_path):
    line = one_line_error(capsys, ["train", "all", "--config", "tiny", "--out", str(tmp_path / "run"),
                                   "--data", str(tmp_path / "nodata")])
    assert line.startswith("larr train: ")
    assert "dataset.json: missing" in line and "larr data synth" in line


@pytest.mark.parametrize(
    "override, message",
    [
        ("ctr.no_such_key=1", "config.ctr: unknown key(s) ['no_such_key']"),
        ("ctr.max_epochs=two", "config.ctr.max_epochs: expected int, got 'two'"),
        ("ctr.backbone.kind=transformer", "config.ctr.backbone: BackboneConfig.kind must be one of"),
        ("ctr.variants=[larr, bert]", "ctr.variants: unknown variant 'bert'"),
        ("no_equals_sign", "--set 'no_equals_sign': expected KEY=VALUE"),
    ],
)
def test_config_errors_name_the_key(capsys, tmp_path, override, message):
    line = one_line_error(capsys, ["train", "ctr", "--out", str(tmp_path / "run"), "--set", override])
    assert line.startswith("larr train: ") and message in line


def test_unknown_config_name(capsys, tmp_path):
    line = one_line_error(capsys, ["train", "ctr", "--out", str(tmp_path / "run"), "--config", "huge"])
    assert "config 'huge' is neither a file nor a shipped config" in line


def test_stage_before_its_input_says_which_stage(capsys, tmp_path, small_world):
    write_dataset(tmp_path / "data", small_world)
    line = one_line_error(capsys, ["train", "embed", "--out", str(tmp_path / "run"), "--data", str(tmp_path / "data")])
    assert line.startswith("larr train: ") and "no stage-1 model; run `larr train pretrain" in line


def test_export_without_a_run(capsys, tmp_path):
    line = one_line_error(capsys, ["export", "--checkpoints", str(tmp_path / "nothing"), "--target", "cpu",
                                   "--out", str(tmp_path / "repo")])
    assert line.startswith("larr export: ") and "no such run folder" in line and "larr train all" in line


def test_debug_shows_the_traceback(bad_label_data):
    with pytest.raises(DataValidationError, match="is not 0 or 1"):
        main(["--debug", "data", "validate", str(bad_label_data)])


def test_a_bug_is_not_dressed_as_a_user_error(monkeypatch, tmp_path):
    import larr.data.schema

    def broken(path, *args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(larr.data.schema, "load_dataset", broken)
    with pytest.raises(KeyError):
        main(["data", "validate", str(tmp_path)])


def test_undeclared_columns_warn_in_one_line(capsys, tmp_path, small_world):
    write_dataset(tmp_path, small_world)
    path = tmp_path / "test.csv"
    rows = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join([rows[0] + ",device", *(row + ",phone" for row in rows[1:])]) + "\n", encoding="utf-8")
    assert main(["data", "validate", str(tmp_path)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"larr data validate: warning: {path}: column(s) ['device'] not declared in dataset.json, ignored "
                   "(a scene feature must be listed in 'scene_features')"]


def test_the_error_kinds_are_user_errors_and_their_old_builtins():
    # callers that caught the built-in before these classes existed still catch them
    assert issubclass(DataValidationError, UserError) and issubclass(DataValidationError, ValueError)
    assert issubclass(ConfigError, UserError) and issubclass(ConfigError, ValueError)
    assert issubclass(MissingInputError, UserError) and issubclass(MissingInputError, FileNotFoundError)


def test_a_real_process_prints_one_line_and_exits_2(bad_label_data):
    result = subprocess.run([sys.executable, "-m", "larr", "data", "validate", str(bad_label_data)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"larr data validate: {bad_label_data / 'train.csv'}: line 3: column 'label': '4' is not 0 or 1"
    ]


def test_export_of_an_unservable_variant_says_why(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "full_text: it embeds the whole scene" in help_text and "no_stage2: its features come from the stage-1 LM" in help_text
    line = one_line_error(capsys, ["export", "--checkpoints", str(tmp_path), "--target", "cpu", "--out",
                                   str(tmp_path / "repo"), "--variant", "full_text"])
    assert line.startswith("larr export: variant 'full_text' cannot be served") and "whole scene" in line


def test_serve_without_a_repository_is_one_line(capsys, tmp_path):
    line = one_line_error(capsys, ["serve", "--model-repository", str(tmp_path / "missing")])
    assert line == f"larr serve: model repository {tmp_path / 'missing'} is not a directory"


def test_query_of_an_unreachable_server_is_one_line_and_exit_1(capsys):
    """Not the user's input but the server: exit 1 (retry elsewhere), still one line and no traceback."""
    from larr.serving.server.ports import free_port

    code = main(["query", "--url", f"127.0.0.1:{free_port()}", "--user-id", "1", "--items", "1,2", "--timeout", "5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("larr query: server error: [StatusCode.UNAVAILABLE]")


def test_query_with_bad_items_names_the_argument(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["query", "--user-id", "1", "--items", "1,x"])
    assert exit_info.value.code == 2
    assert "argument --items: expected comma-separated integers, got '1,x'" in capsys.readouterr().err
