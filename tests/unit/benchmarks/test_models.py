"""The benchmark's model facts: parameter counts, FLOPs per token and MFU, the random-weight CTR heads,
the trained run's discovery."""

from __future__ import annotations

import json

import pytest

from larr.benchmarks.config import LLM_SHAPES, QWEN25_05B, SMOLLM_135M
from larr.benchmarks.inprocess import forward_flops_per_token, model_flops_utilisation
from larr.benchmarks.models import (
    BenchSetupError,
    EncoderShape,
    ParameterCount,
    _content_digest,
    count_parameters,
    encoder_shape,
    find_base_run,
)


def test_flops_per_token_and_mfu():
    parameters = ParameterCount(total=100, embedding=20)
    encoder = EncoderShape(hidden_size=8, num_hidden_layers=2, num_attention_heads=2, head_dim=4)
    # 2 N (non-embedding) + 2 n_layer n_ctx d_attn
    assert forward_flops_per_token(parameters, encoder, context=10) == 2 * 80 + 2 * 2 * 10 * 8
    assert model_flops_utilisation(1000.0, 480.0, 960_000.0) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        model_flops_utilisation(1.0, 1.0, 0.0)


def test_parameter_count_matches_the_model(tiny_run):
    from larr.models.embedder import TextEmbedder

    embedder = TextEmbedder.from_pretrained(tiny_run.embedder_dir)
    counted = count_parameters(tiny_run.embedder_dir)
    assert counted.total == sum(p.numel() for p in embedder.parameters())
    assert counted.embedding == embedder.encoder.get_input_embeddings().weight.numel()
    config = json.loads((tiny_run.embedder_dir / "encoder" / "config.json").read_text())
    shape = encoder_shape(tiny_run.embedder_dir)
    assert (shape.hidden_size, shape.num_hidden_layers) == (config["hidden_size"], config["num_hidden_layers"])
    assert shape.num_attention_heads * shape.head_dim == config["hidden_size"]


def test_base_run_and_its_dataset(tiny_run, tmp_path):
    base = find_base_run(tiny_run.run_dir)
    info = json.loads((tiny_run.data_dir / "dataset.json").read_text())
    assert (base.num_users, base.num_items) == (info["num_users"], info["num_items"])
    assert base.data_dir == tiny_run.data_dir.resolve()
    with pytest.raises(BenchSetupError, match="make demo"):
        find_base_run(tmp_path / "no_run")


@pytest.mark.parametrize("name", [SMOLLM_135M, QWEN25_05B])
def test_random_shapes_have_the_real_models_size(name):
    """The shapes are the real SmolLM-135M / Qwen2.5-0.5B ones (135M / 494M parameters with tied embeddings)."""
    import torch
    from transformers import AutoModel, LlamaConfig, Qwen2Config

    shape = LLM_SHAPES[name]
    config_class = {"llama": LlamaConfig, "qwen2": Qwen2Config}[shape.architecture]
    with torch.device("meta"):  # shapes only, no memory
        model = AutoModel.from_config(config_class(**shape.config_kwargs()))
    total = sum(p.numel() for p in model.parameters())
    non_embedding, embedding = shape.approximate_parameters()
    assert total == pytest.approx(non_embedding + embedding, rel=0.01)
    assert total / 1e6 == pytest.approx({SMOLLM_135M: 134.5, QWEN25_05B: 494.0}[name], rel=0.01)


def test_the_serving_code_digest_ignores_docstrings_and_comments_but_not_code(tmp_path):
    original = 'def f(x):\n    """Say what f does."""\n    return x + 1  # one more\n'
    reworded = 'def f(x):\n    """Say it otherwise,\n    over two lines."""\n    # a new comment\n    return x + 1\n'
    changed = 'def f(x):\n    """Say what f does."""\n    return x + 2  # one more\n'
    digests = []
    for n, text in enumerate((original, reworded, changed)):
        path = tmp_path / f"m{n}.py"
        path.write_text(text, encoding="utf-8")
        digests.append(_content_digest([path]))
    assert digests[0] == digests[1] != digests[2]
