"""The model repository writer: every config.pbtxt parses back into a ModelConfig with the contract's
names, dtypes, dims and parameters, and the ensemble's steps form a graph Triton can schedule.

Covers generated repositories (cpu target exported for real; gpu target config-only, no engine
build) and where the export finds its adapters and writes by default.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from larr import contract
from larr.export import tensorrt_build
from larr.export.cli import configure_export_parser, run_export
from larr.export.fresh_text_policy import apply_fresh_text_policy
from larr.export.model_configs import build_configs, feature_cache_config, validate_ensemble
from larr.export.onnx_export import onnx_digest
from larr.export.options import BACKGROUND_NICE, ModelFacts, RepositoryError, RepositoryOptions
from larr.export.repository import dataset_facts, served_input_config, write_repository
from larr.layout import RunLayout, packaged_adapters_dir
from larr.serving.runtime import SERVING_META_FILE
from larr.serving.stores.redis import RedisStoreConfig
from larr.tokenization import EmbeddingInputConfig

MODELS = (contract.ENSEMBLE_NAME, contract.FEATURE_CACHE_MODEL, contract.EMBEDDER_MODEL, contract.CTR_MODEL)
GPU = mc.ModelInstanceGroup.KIND_GPU
CPU = mc.ModelInstanceGroup.KIND_CPU


def parse_config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(encoding="utf-8"), mc.ModelConfig())


def read_repository(root: Path) -> dict[str, mc.ModelConfig]:
    return {name: parse_config(root / name / "config.pbtxt") for name in MODELS}


def tensors(tensor_list) -> dict[str, tuple[int, list[int]]]:
    return {t.name: (t.data_type, list(t.dims)) for t in tensor_list}


def feature_cache_params(repository: Path) -> dict[str, str]:
    return params(parse_config(repository / contract.FEATURE_CACHE_MODEL / "config.pbtxt"))


def params(config: mc.ModelConfig) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


def assert_schedulable(ensemble: mc.ModelConfig, models: dict[str, mc.ModelConfig]) -> None:
    """Independent of validate_ensemble: each step reads only ensemble inputs or earlier outputs, with
    the model's dtype; all model inputs fed; every ensemble output produced."""
    available = {t.name: t.data_type for t in ensemble.input}
    assert ensemble.ensemble_scheduling.step, "an ensemble needs steps"
    for step in ensemble.ensemble_scheduling.step:
        model = models[step.model_name]
        model_inputs = {t.name: t.data_type for t in model.input}
        model_outputs = {t.name: t.data_type for t in model.output}
        assert set(step.input_map) == set(model_inputs), step.model_name
        for model_name, ensemble_name in step.input_map.items():
            assert ensemble_name in available, f"{step.model_name} reads {ensemble_name} before anything writes it"
            assert available[ensemble_name] == model_inputs[model_name]
        for model_name, ensemble_name in step.output_map.items():
            available[ensemble_name] = model_outputs[model_name]
    for output in ensemble.output:
        assert available.get(output.name) == output.data_type, output.name


def check_configs(
    configs: dict[str, mc.ModelConfig], target: str, facts: ModelFacts, options: RepositoryOptions
) -> None:
    """The contract of every model config, for either target."""
    k, d = len(facts.scene_features), facts.embedding_dim
    features_json = json.dumps(list(facts.scene_features))

    ensemble = configs[contract.ENSEMBLE_NAME]
    assert (ensemble.name, ensemble.platform, ensemble.max_batch_size) == (
        contract.ENSEMBLE_NAME, "ensemble", options.request_batch,
    )
    assert tensors(ensemble.input) == {
        contract.SCENE_TEXT: (mc.TYPE_STRING, [-1]),
        contract.USER_ID: (mc.TYPE_INT64, [1]),
        contract.ITEM_IDS: (mc.TYPE_INT64, [-1]),
    }
    assert tensors(ensemble.output) == {contract.CTR: (mc.TYPE_FP32, [-1])}
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == [contract.FEATURE_CACHE_MODEL, contract.CTR_MODEL]
    # on both targets the first step reads the ids as well, to refuse bad ones before ctr (a TensorRT plan
    # on gpu, with no checks) runs
    cache_step = ensemble.ensemble_scheduling.step[0]
    assert dict(cache_step.input_map) == {name: name for name in (contract.SCENE_TEXT, contract.USER_ID, contract.ITEM_IDS)}
    assert params(ensemble) == {
        contract.PARAM_SCENE_FEATURES: features_json,
        contract.PARAM_MAX_CANDIDATES: str(options.max_candidates),
        contract.PARAM_EMBEDDER_VERSION: facts.embedder_version,
    }
    assert json.loads(params(ensemble)[contract.PARAM_SCENE_FEATURES]) == list(facts.scene_features)

    cache = configs[contract.FEATURE_CACHE_MODEL]
    assert (cache.backend, cache.max_batch_size) == ("python", options.request_batch)
    assert cache.HasField("dynamic_batching") == (options.request_batch > 0)
    assert tensors(cache.input) == {
        contract.SCENE_TEXT: (mc.TYPE_STRING, [-1]),
        contract.USER_ID: (mc.TYPE_INT64, [1]),
        contract.ITEM_IDS: (mc.TYPE_INT64, [-1]),
    }
    # the adapter reads them in this order
    assert [t.name for t in cache.input] == [contract.SCENE_TEXT, contract.USER_ID, contract.ITEM_IDS]
    assert [t.allow_ragged_batch for t in cache.input] == [False, False, options.request_batch > 0]
    assert tensors(cache.output) == {contract.SCENE_EMB: (mc.TYPE_FP32, [-1, d]), contract.SCENE_IDS: (mc.TYPE_INT64, [-1])}
    assert params(cache) == {
        contract.PARAM_SCENE_FEATURES: features_json,
        contract.PARAM_SCENE_STORE: options.scene_store.value,
        contract.PARAM_CACHE_CAPACITY: str(options.cache_capacity),
        contract.PARAM_CACHE_MAX_BYTES: str(options.cache_max_bytes),
        contract.PARAM_EMBEDDER_MODEL: contract.EMBEDDER_MODEL,
        contract.PARAM_EMBEDDER_MAX_BATCH: str(options.embedder_max_batch),
        contract.PARAM_EMBEDDER_VERSION: facts.embedder_version,
        contract.PARAM_FRESH_TEXT_POLICY: options.fresh_text_policy.value,
        # async on cpu: background embedding goes to the reniced copy of the embedder
        contract.PARAM_BACKGROUND_EMBEDDER_MODEL: contract.EMBEDDER_BACKGROUND_MODEL
        if (target, options.fresh_text_policy.value) == ("cpu", "async") else contract.EMBEDDER_MODEL,
        contract.PARAM_BACKGROUND_BUSY_SHARE: str(options.background_busy_share),
        contract.PARAM_MISS_DEADLINE_MS: str(options.miss_deadline_ms),
        contract.PARAM_MAX_CANDIDATES: str(options.max_candidates),
    }
    assert [(g.kind, g.count) for g in cache.instance_group] == [(CPU, options.feature_cache_instances)]

    embedder = configs[contract.EMBEDDER_MODEL]
    assert embedder.max_batch_size == options.embedder_max_batch
    assert embedder.dynamic_batching.max_queue_delay_microseconds == options.max_queue_delay_us
    assert tensors(embedder.input) == {contract.INPUT_IDS: (mc.TYPE_INT64, [-1]), contract.ATTENTION_MASK: (mc.TYPE_INT64, [-1])}
    # the python adapter re-pads calls of different lengths into one run; a TensorRT plan batches equal shapes only
    assert [t.allow_ragged_batch for t in embedder.input] == [target == "cpu"] * 2
    assert tensors(embedder.output) == {contract.EMBEDDING: (mc.TYPE_FP32, [d])}

    ctr = configs[contract.CTR_MODEL]
    assert ctr.max_batch_size == options.request_batch
    assert ctr.HasField("dynamic_batching") == (options.request_batch > 0)
    assert [t.allow_ragged_batch for t in ctr.input] == [False, False, False, options.request_batch > 0]
    assert tensors(ctr.input) == {
        contract.SCENE_EMB: (mc.TYPE_FP32, [k, d]),
        contract.SCENE_IDS: (mc.TYPE_INT64, [k]),
        contract.USER_ID: (mc.TYPE_INT64, [1]),
        contract.ITEM_IDS: (mc.TYPE_INT64, [-1]),
    }
    # adapters read them in this order
    assert [t.name for t in ctr.input] == [contract.SCENE_EMB, contract.SCENE_IDS, contract.USER_ID, contract.ITEM_IDS]
    assert tensors(ctr.output) == {contract.CTR: (mc.TYPE_FP32, [-1])}

    if target == "gpu":
        for config in (embedder, ctr):
            assert (config.platform, config.backend) == ("tensorrt_plan", "")
            assert config.default_model_filename == "model.plan"
            assert params(config) == {}
            assert {g.kind for g in config.instance_group} == {GPU}
    else:
        kind = GPU if options.device.startswith("cuda") else CPU
        runtime = {
            contract.PARAM_RUNTIME: options.runtime,
            contract.PARAM_DEVICE: options.device,
            contract.PARAM_MODEL_FILE: "torch" if options.runtime == "torch" else "model.onnx",
            contract.PARAM_INTRA_OP_THREADS: str(options.intra_op_threads),
        }
        assert (embedder.backend, embedder.platform) == ("python", "")
        assert params(embedder) == {**runtime, contract.PARAM_VOCAB_SIZE: str(facts.vocab_size)}
        assert [(g.kind, g.count) for g in embedder.instance_group] == [(kind, options.embedder_instances)]
        assert (ctr.backend, ctr.platform) == ("python", "")
        assert params(ctr) == {
            **runtime,
            contract.PARAM_MAX_CANDIDATES: str(options.max_candidates),
            contract.PARAM_SCENE_VOCAB_SIZES: json.dumps(list(facts.scene_vocab_sizes)),
        }
        assert [(g.kind, g.count) for g in ctr.instance_group] == [(kind, options.ctr_instances)]
    assert_schedulable(ensemble, configs)


# --------------------------------------------------------------------------------------------- generated: cpu


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> Path:
    """A stand-in for the committed adapters folder: one marker model.py per python model."""
    root = tmp_path_factory.mktemp("adapters")
    for name in (contract.FEATURE_CACHE_MODEL, contract.EMBEDDER_MODEL, contract.CTR_MODEL):
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "model.py").write_text(f"# adapter of {name}\n")
    return root


def cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_export_parser(parser)
    return parser.parse_args(list(argv))


@pytest.fixture(scope="module")
def cpu_repository(tiny_run, adapters, tmp_path_factory) -> tuple[Path, str]:
    """``larr export --target cpu`` into a folder holding a stale plan from an earlier gpu export."""
    out = tmp_path_factory.mktemp("repo_cpu")
    (out / contract.EMBEDDER_MODEL / "1").mkdir(parents=True)
    (out / contract.EMBEDDER_MODEL / "1" / "model.plan").write_bytes(b"stale")
    printed = io.StringIO()
    args = cli_args(
        "--checkpoints", str(tiny_run.run_dir), "--target", "cpu", "--out", str(out), "--adapters", str(adapters),
        "--cache-capacity", "123", "--max-candidates", "77", "--embedder-max-batch", "16",
        "--scene-store", "local", "--cache-max-bytes", "4096", "--fresh-text-policy", "async",
    )
    with contextlib.redirect_stdout(printed):
        assert run_export(args) == 0
    return out, printed.getvalue()


def facts_of(out: Path, tiny_run) -> ModelFacts:
    info = json.loads((tiny_run.data_dir / "dataset.json").read_text())
    embedding_config = json.loads((tiny_run.embedder_dir / "embedding_config.json").read_text())
    vocab = json.loads((tiny_run.ctr_dir() / "vocab.json").read_text())
    return ModelFacts(
        scene_features=tuple(info["scene_features"]),
        embedding_dim=json.loads((tiny_run.embedder_dir / "embedder.json").read_text())["projection_dim"],
        scene_inputs=len(info["scene_features"]),
        embedder_version=onnx_digest(out / contract.EMBEDDER_MODEL / "1" / "model.onnx"),
        max_length=embedding_config["max_length"],
        vocab_size=json.loads((tiny_run.embedder_dir / "encoder" / "config.json").read_text())["vocab_size"],
        # the scene fields' table rows: row 0 (unseen) + one per value the feature cache's vocab knows
        scene_vocab_sizes=tuple(len(values) + 1 for values in vocab["values"][2:]),
    )


def test_cpu_repository_configs(cpu_repository, tiny_run):
    out, _ = cpu_repository
    options = RepositoryOptions(cache_capacity=123, cache_max_bytes=4096, max_candidates=77, embedder_max_batch=16,
                                scene_store="local", fresh_text_policy="async")
    check_configs(read_repository(out), "cpu", facts_of(out, tiny_run), options)


def test_cpu_repository_files(cpu_repository, tiny_run, adapters):
    out, printed = cpu_repository
    assert [p.relative_to(out) for p in (out / contract.ENSEMBLE_NAME / "1").iterdir()] == [Path(contract.ITEM_NAMES_PATH)]
    listing = {name: sorted(p.name for p in (out / name / "1").iterdir()) for name in MODELS}
    assert listing[contract.EMBEDDER_MODEL] == ["model.onnx", "model.py"]  # the stale plan is gone
    assert listing[contract.CTR_MODEL] == ["model.onnx", "model.py"]
    assert listing[contract.FEATURE_CACHE_MODEL] == sorted(
        [contract.EMBEDDING_CONFIG_FILE, "model.py", contract.SCENE_VOCAB_FILE, contract.TOKENIZER_FILE,
         contract.SCENE_TABLE_FILE, contract.SCENE_TABLE_INDEX_FILE]
    )  # the scene store "local" starts warm from the table of every dataset text
    table = json.loads((out / contract.FEATURE_CACHE_MODEL / "1" / contract.SCENE_TABLE_INDEX_FILE).read_text())
    assert table["embedder_version"] == onnx_digest(out / contract.EMBEDDER_MODEL / "1" / "model.onnx")
    cache_dir = out / contract.FEATURE_CACHE_MODEL / "1"
    for name in (contract.FEATURE_CACHE_MODEL, contract.EMBEDDER_MODEL, contract.CTR_MODEL):
        assert (out / name / "1" / "model.py").read_text() == f"# adapter of {name}\n"
    assert (cache_dir / contract.TOKENIZER_FILE).read_bytes() == (tiny_run.embedder_dir / contract.TOKENIZER_FILE).read_bytes()
    # served texts are padded to their call's longest (the embedder batches ragged calls), the rest as trained
    trained = json.loads((tiny_run.embedder_dir / contract.EMBEDDING_CONFIG_FILE).read_text())
    assert trained["pad_to_multiple_of"] > 1
    assert json.loads((cache_dir / contract.EMBEDDING_CONFIG_FILE).read_text()) == {**trained, "pad_to_multiple_of": 1}
    vocab = json.loads((tiny_run.ctr_dir() / "vocab.json").read_text())
    scene_vocab = json.loads((cache_dir / contract.SCENE_VOCAB_FILE).read_text())
    assert scene_vocab == {"fields": vocab["fields"][2:], "values": vocab["values"][2:]}
    # one progress line per artifact
    for fragment in ("embedder/1/model.onnx", "ctr/1/model.onnx", contract.SCENE_VOCAB_FILE, "larr/config.pbtxt", "1/model.py"):
        assert fragment in printed, fragment


def test_async_adds_an_idle_priority_background_embedder_and_strict_removes_it(cpu_repository, tmp_path):
    exported, _ = cpu_repository  # exported with --fresh-text-policy async
    out = tmp_path / "repo"
    shutil.copytree(exported, out)
    background = out / contract.EMBEDDER_BACKGROUND_MODEL
    config, embedder = parse_config(background / "config.pbtxt"), parse_config(out / contract.EMBEDDER_MODEL / "config.pbtxt")
    assert config.name == contract.EMBEDDER_BACKGROUND_MODEL
    assert params(config) == {**params(embedder), contract.PARAM_PROCESS_NICE: str(BACKGROUND_NICE)}
    assert [(g.kind, g.count) for g in config.instance_group] == [(embedder.instance_group[0].kind, 1)]
    assert (tensors(config.input), tensors(config.output)) == (tensors(embedder.input), tensors(embedder.output))
    for name in ("model.onnx", "model.py"):  # the embedder's own files (hard links where the file system allows)
        assert (background / "1" / name).read_bytes() == (out / contract.EMBEDDER_MODEL / "1" / name).read_bytes()
    apply_fresh_text_policy(out, "strict")
    assert not background.exists()
    cache = params(parse_config(out / contract.FEATURE_CACHE_MODEL / "config.pbtxt"))
    assert cache[contract.PARAM_FRESH_TEXT_POLICY] == "strict"
    assert cache[contract.PARAM_BACKGROUND_EMBEDDER_MODEL] == contract.EMBEDDER_MODEL
    apply_fresh_text_policy(out, "async")  # and back, as the benchmarks switch a reused repository
    assert parse_config(background / "config.pbtxt") == config
    assert feature_cache_params(out)[contract.PARAM_BACKGROUND_EMBEDDER_MODEL] == (
        contract.EMBEDDER_BACKGROUND_MODEL
    )
    # the export wrote the default busy share; a switch may replace it, within (0, 1]
    assert float(feature_cache_params(out)[contract.PARAM_BACKGROUND_BUSY_SHARE]) == 1.0
    apply_fresh_text_policy(out, "async", busy_share=0.25)
    assert feature_cache_params(out)[contract.PARAM_BACKGROUND_BUSY_SHARE] == "0.25"
    with pytest.raises(ValueError, match="busy share"):
        apply_fresh_text_policy(out, "async", busy_share=0.0)
    with pytest.raises(ValueError, match="background_busy_share"):
        RepositoryOptions(fresh_text_policy="async", background_busy_share=1.5)


def test_embedder_version_keys_every_cache_parameter(cpu_repository):
    out, _ = cpu_repository
    configs = read_repository(out)
    version = onnx_digest(out / contract.EMBEDDER_MODEL / "1" / "model.onnx")
    assert len(version) == 12 and all(c in "0123456789abcdef" for c in version)
    assert params(configs[contract.ENSEMBLE_NAME])[contract.PARAM_EMBEDDER_VERSION] == version
    assert params(configs[contract.FEATURE_CACHE_MODEL])[contract.PARAM_EMBEDDER_VERSION] == version


def test_torch_runtime_on_cuda_id_only(tiny_run, adapters, tmp_path):
    """runtime torch: PyTorch artifacts next to the ONNX ones; cuda device -> KIND_GPU python instances."""
    options = RepositoryOptions(
        variant="id_only", runtime="torch", device="cuda:0", embedder_instances=2, ctr_instances=3
    )
    result = write_repository(tiny_run.run_dir, tmp_path, options, adapters_dir=adapters, progress=lambda line: None)
    check_configs(read_repository(tmp_path), "cpu", result.facts, options)
    embedder_torch = tmp_path / contract.EMBEDDER_MODEL / "1" / "torch"
    assert sorted(p.name for p in embedder_torch.iterdir()) == sorted(p.name for p in tiny_run.embedder_dir.iterdir())
    ctr_torch = tmp_path / contract.CTR_MODEL / "1" / "torch"
    expected = sorted(["ctr.json", "model.safetensors", SERVING_META_FILE, "vocab.json"])
    assert sorted(p.name for p in ctr_torch.iterdir()) == expected
    assert json.loads((ctr_torch / "ctr.json").read_text())["variant"] == "id_only"
    info = json.loads((tiny_run.data_dir / "dataset.json").read_text())
    counts = {"num_users": info["num_users"], "num_items": info["num_items"]}
    assert json.loads((ctr_torch / SERVING_META_FILE).read_text()) == counts
    # the catalogue's names, for `larr query --model-repository` (item id i at i, as items.csv lists them)
    with (tiny_run.data_dir / "items.csv").open(newline="", encoding="utf-8") as handle:
        names = {int(row["item_id"]): row["name"] for row in csv.DictReader(handle)}
    assert json.loads((tmp_path / contract.ITEM_NAMES_PATH).read_text(encoding="utf-8")) == [names[i] for i in range(len(names))]


# --------------------------------------------------------------------------------------------- generated: gpu configs


def test_gpu_configs_without_engines():
    facts = ModelFacts(
        ("weather", "time_slot", "place"), embedding_dim=48, scene_inputs=3, embedder_version="0123456789ab", max_length=32,
        vocab_size=500, scene_vocab_sizes=(5, 7, 9),
    )
    options = RepositoryOptions(target="gpu", embedder_max_batch=32, embedder_instances=2, ctr_instances=2)
    configs = build_configs(options, facts)
    round_tripped = {
        name: text_format.Parse(text_format.MessageToString(config), mc.ModelConfig()) for name, config in configs.items()
    }
    assert round_tripped == configs
    check_configs(round_tripped, "gpu", facts, options)


def test_gpu_repository_with_a_stub_engine_builder(tiny_run, adapters, tmp_path, monkeypatch):
    """The gpu plumbing without TensorRT: plans from the exported ONNX with the right profiles, no ONNX left
    in the repository, python adapters only for the feature cache."""
    built = {}

    def fake_build_engine(onnx_path, plan_path, profiles, fp16=True):
        assert Path(onnx_path).exists() and fp16
        built[Path(plan_path).parent.parent.name] = profiles
        Path(plan_path).write_bytes(b"plan")
        return Path(plan_path)

    monkeypatch.setattr(tensorrt_build, "require_tensorrt", lambda: None)
    monkeypatch.setattr(tensorrt_build, "build_engine", fake_build_engine)
    options = RepositoryOptions(target="gpu", max_candidates=300, embedder_max_batch=32)
    result = write_repository(tiny_run.run_dir, tmp_path, options, adapters_dir=adapters, progress=lambda line: None)
    check_configs(read_repository(tmp_path), "gpu", result.facts, options)
    listing = {name: sorted(p.name for p in (tmp_path / name / "1").iterdir()) for name in MODELS}
    assert listing[contract.EMBEDDER_MODEL] == listing[contract.CTR_MODEL] == ["model.plan"]
    assert "model.py" in listing[contract.FEATURE_CACHE_MODEL]
    max_length = result.facts.max_length
    embedder_profiles = built[contract.EMBEDDER_MODEL]
    assert embedder_profiles[contract.INPUT_IDS][2] == embedder_profiles[contract.ATTENTION_MASK][2] == (32, max_length)
    assert built[contract.CTR_MODEL] == {contract.ITEM_IDS: ((1,), (100,), (300,))}


def test_gpu_target_without_tensorrt_fails_clearly(tiny_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tensorrt_build, "tensorrt_problem", lambda: "the `tensorrt` Python package is not installed")
    args = cli_args("--checkpoints", str(tiny_run.run_dir), "--target", "gpu", "--out", str(tmp_path / "repo"))
    assert run_export(args) == 2
    message = capsys.readouterr().err
    assert "tensorrt" in message and "--target cpu --device cuda" in message
    assert not (tmp_path / "repo").exists(), "nothing is written before TensorRT is known to work"


# --------------------------------------------------------------------------------------------- validation and errors


def test_validate_ensemble_rejects_broken_graphs():
    facts = ModelFacts(("weather",), embedding_dim=8, scene_inputs=1, embedder_version="v", max_length=16,
                       vocab_size=300, scene_vocab_sizes=(4,))
    configs = build_configs(RepositoryOptions(), facts)
    validate_ensemble(configs[contract.ENSEMBLE_NAME], configs)

    swapped = mc.ModelConfig()
    swapped.CopyFrom(configs[contract.ENSEMBLE_NAME])
    steps = list(swapped.ensemble_scheduling.step)
    del swapped.ensemble_scheduling.step[:]
    swapped.ensemble_scheduling.step.extend(reversed(steps))  # ctr before the cache produced SCENE_EMB
    with pytest.raises(RepositoryError, match="no ensemble input nor an earlier output"):
        validate_ensemble(swapped, configs)

    wrong_dims = {name: mc.ModelConfig() for name in configs}
    for name, config in configs.items():
        wrong_dims[name].CopyFrom(config)
    wrong_dims[contract.CTR_MODEL].input[0].dims[1] = 9  # D of the ctr differs from the cache's
    with pytest.raises(RepositoryError, match="SCENE_EMB"):
        validate_ensemble(wrong_dims[contract.ENSEMBLE_NAME], wrong_dims)


def test_redis_options_reach_the_store_the_feature_cache_builds():
    """What export writes as redis_* parameters is what RedisStoreConfig reads back (the replicas' retry window)."""
    facts = ModelFacts(("weather",), embedding_dim=8, scene_inputs=1, embedder_version="v", max_length=16,
                       vocab_size=300, scene_vocab_sizes=(4,))
    options = RepositoryOptions(scene_store="redis", redis_url="redis://10.0.0.5:6379/2",
                                redis_socket_timeout_ms=20, redis_retry_after_s=0.25)
    params = {k: v.string_value for k, v in feature_cache_config(options, facts).parameters.items()}
    assert RedisStoreConfig.from_params(params) == RedisStoreConfig(
        url="redis://10.0.0.5:6379/2", socket_timeout_ms=20, retry_after_s=0.25
    )
    # other kinds write no redis_* parameter: nothing for a reader to misread
    local = feature_cache_config(RepositoryOptions(scene_store="local"), facts).parameters
    assert not [key for key in local if key.startswith("redis_")]


def test_invalid_options_are_refused():
    for bad in ({"target": "tpu"}, {"variant": "full_text"}, {"runtime": "tensorflow"}, {"device": "gpu"},
                {"target": "gpu", "runtime": "torch"}, {"embedder_max_batch": 0}, {"cache_capacity": -1},
                {"cache_max_bytes": -1}, {"scene_store": "memcached"}, {"fresh_text_policy": "lazy"},
                {"scene_store": "redis"},
                {"scene_store": "redis", "redis_url": "redis://h:1/0", "redis_retry_after_s": -1},
                {"scene_store": "redis", "redis_url": "redis://h:1/0", "redis_socket_timeout_ms": 0}):
        with pytest.raises(ValueError):
            RepositoryOptions(**bad)


def test_dataset_counts_need_the_dataset_or_flags(tiny_run, tmp_path):
    real = dataset_facts(tiny_run.run_dir)
    info = json.loads((tiny_run.data_dir / "dataset.json").read_text())
    assert (real.num_users, real.num_items) == (info["num_users"], info["num_items"])
    (tmp_path / "config.yaml").write_text("data: /nonexistent/dataset\n")
    with pytest.raises(RepositoryError, match="--num-users"):
        dataset_facts(tmp_path)
    assert dataset_facts(tmp_path, num_users=5, num_items=7).num_items == 7


def test_missing_adapters(tiny_run, tmp_path):
    with pytest.raises(RepositoryError, match="adapters"):
        write_repository(tiny_run.run_dir, tmp_path / "a", RepositoryOptions(), adapters_dir=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.warns(UserWarning, match="adapter missing"):
        write_repository(tiny_run.run_dir, tmp_path / "b", RepositoryOptions(), adapters_dir=tmp_path / "empty",
                         progress=lambda line: None)
    assert not (tmp_path / "b" / contract.CTR_MODEL / "1" / "model.py").exists()


@pytest.mark.parametrize("where", [".", "ctr", "ctr/1"])
def test_export_refuses_to_write_into_the_adapters_folder(tiny_run, adapters, tmp_path, where):
    """An export empties its version folders: into the adapters' folder it would delete the adapters."""
    repo = tmp_path / "model_repository"
    shutil.copytree(adapters, repo)
    with pytest.raises(RepositoryError, match="adapters are copied from"):
        write_repository(tiny_run.run_dir, repo / where, RepositoryOptions(), adapters_dir=repo)
    for name in (contract.FEATURE_CACHE_MODEL, contract.EMBEDDER_MODEL, contract.CTR_MODEL):
        assert (repo / name / "1" / "model.py").read_text() == f"# adapter of {name}\n"


def test_the_installed_adapters_are_the_packages_data():
    """The default adapters are larr.model_repository's files, wherever larr is installed (the wheel test
    checks an installed wheel); the checkout's model_repository/ folder is that package."""
    import larr.model_repository

    folder = packaged_adapters_dir()
    assert folder == Path(larr.model_repository.__file__).parent
    assert sorted(p.relative_to(folder).as_posix() for p in folder.glob("*/1/model.py")) == [
        f"{name}/1/model.py" for name in sorted((contract.CTR_MODEL, contract.EMBEDDER_MODEL, contract.FEATURE_CACHE_MODEL))
    ]


def test_export_writes_into_the_run_folder_by_default(monkeypatch, tmp_path):
    """No --out: the repository goes to RUN/model_repository, outside the source tree."""
    from larr.export import repository

    written = []
    monkeypatch.setattr(repository, "write_repository", lambda checkpoints, out, *args, **kwargs: written.append(out))
    assert run_export(cli_args("--checkpoints", str(tmp_path / "run"), "--target", "cpu")) == 0
    assert written == [RunLayout(tmp_path / "run").model_repository_dir] == [tmp_path / "run" / "model_repository"]


def test_missing_variant_checkpoint(tiny_run, tmp_path):
    with pytest.raises(RepositoryError, match="no_alignment"):
        write_repository(tiny_run.run_dir, tmp_path, RepositoryOptions(variant="no_alignment"))


def test_served_padding_is_the_calls_longest_on_cpu_and_the_trained_multiple_for_tensorrt(tmp_path):
    EmbeddingInputConfig(max_length=40, pad_to_multiple_of=8).save(tmp_path)
    cpu = served_input_config(tmp_path, RepositoryOptions(target="cpu"))
    assert (cpu.max_length, cpu.pad_to_multiple_of) == (40, 1)
    gpu = served_input_config(tmp_path, RepositoryOptions(target="gpu", max_candidates=8))
    assert (gpu.max_length, gpu.pad_to_multiple_of) == (40, 8)
    whole_scene = served_input_config(tmp_path, RepositoryOptions(target="cpu"), max_length=160)
    assert (whole_scene.max_length, whole_scene.pad_to_multiple_of, whole_scene.last_token) == (160, 1, cpu.last_token)
