"""The distilled embedder (``larr train distill``): the widths schedule, channel importance and selection, the pruned
model against the wide one with the dropped channels zeroed, persistence, the stage end to end on a tiny fake run,
and the seams that make stage 3 and the export read it (``ctr.embedder``).

Fakes: tiny random Llama encoders; for the stage, a small synthetic dataset, a BPE tokenizer trained on its texts and
a random TextEmbedder saved where stage 2 saves one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from transformers import LlamaConfig, LlamaModel

from larr.data.schema import write_dataset
from larr.data.synth import SynthConfig, generate
from larr.errors import ConfigError
from larr.layout import EmbedderSource, RunLayout, Variant
from larr.models.embedder import TextEmbedder
from larr.text import format_scene_feature
from larr.tokenization import EmbeddingInputConfig
from larr.training.cli import pipeline
from larr.training.config import load_config, save_config
from larr.training.llm import train_bpe_tokenizer
from larr.training.losses.distillation import cosine_distillation, mse_distillation
from larr.training.prune import (
    ChannelScores,
    ImportanceTracker,
    KeptChannels,
    Widths,
    channel_scores,
    prune_embedder,
    prune_in_one_shot,
    select_channels,
    top_channels,
    width_schedule,
    widths_of,
    zero_channels_,
)

ATOL = 1e-5


def tiny_embedder(hidden: int = 16, intermediate: int = 24, heads: int = 4, kv_heads: int = 2, layers: int = 2,
                  vocab: int = 50, seed: int = 0) -> TextEmbedder:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=64)
    return TextEmbedder(LlamaModel(config), projection_dim=8).eval()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[5, 6, 7, 9, 11, 3], [4, 8, 2, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    return ids, mask


# --------------------------------------------------------------------------------------------- schedule


def test_width_schedule_known_answer():
    schedule = width_schedule(Widths(hidden=64, intermediate=352, heads_per_group=2), ratio=0.5, prune_steps=4)
    assert [w.hidden for w in schedule] == [56, 48, 40, 32]
    assert [w.intermediate for w in schedule] == [308, 264, 220, 176]
    # 2 * (0.875, 0.75, 0.625, 0.5) = 1.75, 1.5, 1.25, 1.0, rounded half up
    assert [w.heads_per_group for w in schedule] == [2, 2, 1, 1]


def test_width_schedule_at_ratio_one_keeps_the_widths():
    full = Widths(128, 352, 2)
    assert width_schedule(full, 1.0, 3) == [full, full, full]


def test_distill_config_rejects_a_schedule_longer_than_the_run():
    with pytest.raises(ConfigError, match="last pruning step"):
        load_config("quick", {"distill.steps": 100, "distill.prune_steps": 4, "distill.prune_every": 30})
    with pytest.raises(ConfigError, match="width_ratio"):
        load_config("quick", {"distill.width_ratio": 0.0})
    with pytest.raises(ConfigError, match="ctr.embedder"):
        load_config("quick", {"ctr.embedder": "smaller"})


# --------------------------------------------------------------------------------------------- importance, selection


def test_top_channels_match_an_independent_selection():
    rng = np.random.default_rng(3)
    scores = torch.from_numpy(rng.random(40))
    expected = np.sort(np.argsort(-scores.numpy(), kind="stable")[:13])
    assert top_channels(scores, 13).tolist() == expected.tolist()


def test_heads_are_chosen_within_each_key_value_group():
    scores = ChannelScores(hidden=torch.arange(4.0), intermediate=[torch.arange(4.0)],
                           heads=[torch.tensor([5.0, 1.0, 2.0, 9.0, 3.0, 4.0])])  # 2 groups of 3 query heads
    kept = select_channels(scores, Widths(hidden=2, intermediate=1, heads_per_group=1), groups=2)
    assert kept.heads[0].tolist() == [0, 3]  # group 0 -> head 0 (5.0); group 1 -> head 3 (9.0), not 0 and 3 globally
    assert kept.hidden.tolist() == [2, 3] and kept.intermediate[0].tolist() == [3]


def test_magnitude_channel_scores_equal_a_sum_written_out_by_hand():
    embedder = tiny_embedder(layers=1)
    scores = channel_scores(embedder, ImportanceTracker("magnitude").scores(embedder))
    enc, block = embedder.encoder, embedder.encoder.layers[0]
    a, m = block.self_attn, block.mlp
    hidden = (enc.embed_tokens.weight.abs().sum(0) + block.input_layernorm.weight.abs()
              + block.post_attention_layernorm.weight.abs() + enc.norm.weight.abs()
              + sum(p.weight.abs().sum(0) for p in (a.q_proj, a.k_proj, a.v_proj, m.gate_proj, m.up_proj))
              + a.o_proj.weight.abs().sum(1) + m.down_proj.weight.abs().sum(1)
              + embedder.projection[0].weight.abs().sum(0))
    torch.testing.assert_close(scores.hidden, hidden.detach())
    intermediate = m.gate_proj.weight.abs().sum(1) + m.up_proj.weight.abs().sum(1) + m.down_proj.weight.abs().sum(0)
    torch.testing.assert_close(scores.intermediate[0], intermediate.detach())
    head_dim = 16 // 4
    heads = torch.stack([a.q_proj.weight[h * head_dim:(h + 1) * head_dim].abs().sum()
                         + a.o_proj.weight[:, h * head_dim:(h + 1) * head_dim].abs().sum() for h in range(4)])
    torch.testing.assert_close(scores.heads[0], heads.detach())
    first, last = embedder.projection[0], embedder.projection[2]
    projection = first.weight.abs().sum(1) + first.bias.abs() + last.weight.abs().sum(0)
    torch.testing.assert_close(scores.projection, projection.detach())


def test_taylor_importance_is_abs_weight_times_grad_summed_over_steps():
    embedder = tiny_embedder(layers=1).train()
    tracker = ImportanceTracker("taylor")
    weight = embedder.encoder.layers[0].mlp.down_proj.weight
    expected = torch.zeros_like(weight)
    for seed in range(2):
        embedder.zero_grad()
        torch.manual_seed(seed)
        embedder.project(*batch()).pow(2).sum().backward()
        expected += (weight * weight.grad).abs().detach()
        tracker.accumulate(embedder)
    name = "encoder.layers.0.mlp.down_proj.weight"
    torch.testing.assert_close(tracker.scores(embedder)[name], expected)


# --------------------------------------------------------------------------------------------- the pruned model


def test_pruned_weights_are_the_kept_rows_and_columns():
    embedder = tiny_embedder()
    kept = KeptChannels(hidden=torch.tensor([0, 3, 4, 9, 10, 15]), intermediate=[torch.tensor([1, 5, 7]), torch.tensor([0, 2, 23])],
                        heads=[torch.tensor([1, 2]), torch.tensor([0, 3])], projection=torch.tensor([1, 2, 5, 6, 7, 8]))
    pruned = prune_embedder(embedder, kept)
    assert widths_of(pruned) == Widths(hidden=6, intermediate=3, heads_per_group=1)
    wide, narrow = embedder.encoder.layers[1], pruned.encoder.layers[1]
    h, i = kept.hidden, kept.intermediate[1]
    torch.testing.assert_close(narrow.mlp.gate_proj.weight, wide.mlp.gate_proj.weight[i][:, h])
    torch.testing.assert_close(narrow.mlp.down_proj.weight, wide.mlp.down_proj.weight[h][:, i])
    q_rows = torch.tensor([0, 1, 2, 3, 12, 13, 14, 15])  # heads 0 and 3, head_dim 4
    torch.testing.assert_close(narrow.self_attn.q_proj.weight, wide.self_attn.q_proj.weight[q_rows][:, h])
    torch.testing.assert_close(narrow.self_attn.k_proj.weight, wide.self_attn.k_proj.weight[:, h])
    torch.testing.assert_close(pruned.encoder.embed_tokens.weight, embedder.encoder.embed_tokens.weight[:, h])
    p = kept.projection
    torch.testing.assert_close(pruned.projection[0].weight, embedder.projection[0].weight[p][:, h])
    torch.testing.assert_close(pruned.projection[2].weight, embedder.projection[2].weight[:, p])
    assert pruned.encoder.config.head_dim == 4


def test_pruning_mlp_channels_and_heads_equals_zeroing_them():
    """Dropping MLP channels (silu(0) * up = 0) and query heads (their o_proj columns) is exact: the narrow model's
    embeddings equal the wide model's with those channels zeroed."""
    embedder = tiny_embedder(hidden=16, intermediate=24, heads=4, kv_heads=2)
    all_hidden = torch.arange(16)
    intermediate = [torch.tensor([0, 2, 3, 8, 9, 20]), torch.tensor([1, 4, 5, 6, 17, 23])]
    heads = [torch.tensor([0, 3]), torch.tensor([1, 2])]  # one query head per key/value group
    pruned = prune_embedder(embedder, KeptChannels(all_hidden, intermediate, heads, projection=all_hidden)).eval()
    zero_channels_(embedder, intermediate, heads)
    with torch.no_grad():
        torch.testing.assert_close(pruned(*batch()), embedder(*batch()), atol=ATOL, rtol=ATOL)


def test_hidden_pruning_gives_a_working_narrower_model():
    embedder = tiny_embedder()
    scores = channel_scores(embedder, ImportanceTracker("magnitude").scores(embedder))
    pruned = prune_embedder(embedder, select_channels(scores, Widths(8, 12, 1), groups=2)).eval()
    assert widths_of(pruned) == Widths(8, 12, 1)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in embedder.parameters())
    out = pruned(*batch())
    assert out.shape == (2, 8) and torch.isfinite(out).all()
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2))


def test_one_shot_pruning_has_the_distillation_end_widths_and_the_magnitude_choice():
    """What `larr bench --embedder-width-ratio` serves: the last widths of the distillation's schedule, the channels
    a magnitude selection keeps, and no training."""
    embedder = tiny_embedder()
    pruned = prune_in_one_shot(embedder, 0.5)
    assert widths_of(pruned) == width_schedule(widths_of(embedder), 0.5, 4)[-1] == Widths(8, 12, 1)
    scores = channel_scores(embedder, ImportanceTracker("magnitude").scores(embedder))
    by_hand = prune_embedder(embedder, select_channels(scores, Widths(8, 12, 1), groups=2))
    for (name, weight), (_, expected) in zip(pruned.state_dict().items(), by_hand.state_dict().items(), strict=True):
        torch.testing.assert_close(weight, expected, msg=name)


def test_pruned_embedder_survives_a_save_load_round_trip(fake_run):
    embedder = TextEmbedder.from_pretrained(RunLayout(fake_run).embedder_dir())
    scores = channel_scores(embedder, ImportanceTracker("magnitude").scores(embedder))
    pruned = prune_embedder(embedder, select_channels(scores, Widths(12, 20, 1), groups=2)).eval()
    directory = fake_run.parent / "round_trip"
    from transformers import AutoTokenizer

    source = RunLayout(fake_run).embedder_dir()
    pruned.save_pretrained(directory, AutoTokenizer.from_pretrained(source), EmbeddingInputConfig.load(source))
    loaded = TextEmbedder.from_pretrained(directory)
    assert widths_of(loaded) == Widths(12, 20, 1)
    ids = torch.randint(0, 100, (3, 7))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask), pruned(ids, mask), atol=ATOL, rtol=ATOL)


# --------------------------------------------------------------------------------------------- losses


def test_distillation_losses_known_answers():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[3.0, 0.0], [1.0, 0.0]])  # row 0: same direction (0), row 1: orthogonal (1)
    torch.testing.assert_close(cosine_distillation(a, b), torch.tensor(0.5))
    torch.testing.assert_close(mse_distillation(a, b), torch.tensor((4.0 + 0 + 1 + 4) / 4))


# --------------------------------------------------------------------------------------------- the stage, the seams


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """A run folder with a small dataset and a random TextEmbedder where stage 2 writes one."""
    root = tmp_path_factory.mktemp("distill")
    dataset = generate(SynthConfig(seed=7, num_users=30, shops_per_category=2, train_rows=600, valid_rows=200, test_rows=50))
    write_dataset(root / "data", dataset)
    features = dataset.info.scene_features
    corpus = [format_scene_feature(f, t) for split in dataset.splits.values() for f, col in zip(features, split.scene)
              for t in col] + list(dataset.items.name)
    hf = train_bpe_tokenizer(corpus, 400, features)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(hf), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    run = root / "run"
    TextEmbedder(LlamaModel(config), projection_dim=16).eval().save_pretrained(
        RunLayout(run).embedder_dir(), hf, EmbeddingInputConfig(max_length=24))
    return run


def test_distill_stage_end_to_end_reduces_the_distillation_loss(fake_run):
    from larr.training.distill import run

    config = load_config("quick", {
        "data": str(fake_run.parent / "data"), "threads": 1, "embed.eval_pairs": 40,
        "distill.steps": 16, "distill.prune_steps": 2, "distill.prune_every": 4, "distill.batch_size": 32,
        "distill.learning_rate": 3e-3, "distill.warmup_steps": 2,
    })
    result = run(config, fake_run)
    layout = RunLayout(fake_run)
    student = TextEmbedder.from_pretrained(layout.distilled_embedder_dir)  # the existing loader reads it
    assert widths_of(student) == Widths(hidden=16, intermediate=24, heads_per_group=1)
    assert result["widths"]["student"] == {"hidden": 16, "intermediate": 24, "heads_per_group": 1}
    assert result["parameters"]["student"] < result["parameters"]["teacher"]
    assert result["held_out_loss"]["distilled"] < result["held_out_loss"]["pruned_untrained"]
    assert set(result["recall@10"]["student"]) == {"user_user", "item_item", "user_item"}
    steps = (layout.distill_dir / "steps.csv").read_text().splitlines()
    assert len(steps) == 1 + 16 and steps[-1].split(",")[-3:] == ["16.0", "24.0", "1.0"]


def test_stage3_and_export_read_the_distilled_embedder_when_configured(tmp_path):
    layout = RunLayout(tmp_path)
    assert layout.embedder_dir(Variant.LARR, EmbedderSource.DISTILLED) == tmp_path / "distill" / "model"
    assert layout.embedder_dir(Variant.NO_ALIGNMENT, "distilled") == tmp_path / "distill" / "model"
    # the ablated embedders are never distilled
    assert layout.embedder_dir(Variant.NO_STAGE1, "distilled") == tmp_path / "embed_no_stage1" / "model"
    assert layout.embedder_dir(Variant.LARR) == tmp_path / "embed" / "model"
    assert layout.ctr_embedder_source() is EmbedderSource.STAGE2  # no config.yaml
    save_config(load_config("quick", {"ctr.embedder": "distilled"}), layout.config_file)
    assert yaml.safe_load(layout.config_file.read_text())["ctr"]["embedder"] == "distilled"
    assert layout.ctr_embedder_source() is EmbedderSource.DISTILLED


def test_train_all_distils_only_when_stage3_reads_the_distilled_embedder():
    assert pipeline(load_config("quick")) == ("pretrain", "embed", "ctr")
    assert pipeline(load_config("quick", {"ctr.embedder": "distilled"})) == ("pretrain", "embed", "distill", "ctr")


def test_width_ratio_flag_sets_the_config():
    from larr.cli import build_parser
    from larr.training.runner import config_from_args

    args = build_parser().parse_args(["train", "distill", "--config", "quick", "--out", "x", "--width-ratio", "0.25"])
    assert config_from_args(args).distill.width_ratio == 0.25


def test_speed_interval_is_the_t_interval_of_the_mean():
    from distill_speed import interval

    result = interval([1.0, 2.0, 3.0])  # mean 2, sd 1, n 3: half-width t(0.975, 2) / sqrt(3) = 4.3027 / 1.7321
    assert result["mean"] == 2.0 and result["n"] == 3
    assert result["ci95"] == pytest.approx([2.0 - 2.4841, 2.0 + 2.4841], abs=1e-3)
