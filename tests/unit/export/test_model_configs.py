"""The ModelConfig builders alone, no filesystem: options and facts in, protos out (their text parses back)."""

from __future__ import annotations

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from larr import contract
from larr.export.model_configs import (
    background_embedder_config,
    build_configs,
    config_text,
    has_background_embedder,
    parse_config_text,
    with_fresh_text_policy,
)
from larr.export.options import BACKGROUND_NICE, ModelFacts, RepositoryOptions
from larr.serving.fresh_text import FreshTextPolicy

FACTS = ModelFacts(
    scene_features=("weather", "time_slot"), embedding_dim=8, scene_inputs=2, embedder_version="abc123def456",
    max_length=16, vocab_size=100, scene_vocab_sizes=(5, 7),
)


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_every_config_parses_back_from_its_text(target):
    configs = build_configs(RepositoryOptions(target=target, max_candidates=50), FACTS)
    assert set(configs) == {contract.ENSEMBLE_NAME, contract.FEATURE_CACHE_MODEL, contract.EMBEDDER_MODEL, contract.CTR_MODEL}
    for name, config in configs.items():
        assert parse_config_text(config_text(config)) == config
        assert config.name == name


def test_the_background_embedder_is_the_embedder_at_idle_priority_with_one_instance():
    embedder = build_configs(RepositoryOptions(embedder_instances=3), FACTS)[contract.EMBEDDER_MODEL]
    background = background_embedder_config(embedder)
    assert background.name == contract.EMBEDDER_BACKGROUND_MODEL
    assert [(group.kind, group.count) for group in background.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 1)]
    assert background.parameters[contract.PARAM_PROCESS_NICE].string_value == str(BACKGROUND_NICE)
    assert list(background.input) == list(embedder.input) and list(background.output) == list(embedder.output)
    assert embedder.instance_group[0].count == 3 and contract.PARAM_PROCESS_NICE not in embedder.parameters  # untouched


def test_only_async_on_a_python_embedder_has_a_background_embedder():
    python = build_configs(RepositoryOptions(target="cpu"), FACTS)[contract.EMBEDDER_MODEL]
    plan = build_configs(RepositoryOptions(target="gpu"), FACTS)[contract.EMBEDDER_MODEL]
    assert has_background_embedder(FreshTextPolicy.ASYNC, python)
    assert not has_background_embedder(FreshTextPolicy.STRICT, python)
    assert not has_background_embedder(FreshTextPolicy.ASYNC, plan)  # a TensorRT plan has no stub to renice


def test_the_fresh_text_policy_rewrites_three_parameters_of_a_copy():
    cache = build_configs(RepositoryOptions(), FACTS)[contract.FEATURE_CACHE_MODEL]
    switched = with_fresh_text_policy(cache, FreshTextPolicy.ASYNC, background=True, busy_share=0.25)
    changed = {key for key in switched.parameters if switched.parameters[key] != cache.parameters[key]}
    assert changed == {contract.PARAM_FRESH_TEXT_POLICY, contract.PARAM_BACKGROUND_EMBEDDER_MODEL,
                       contract.PARAM_BACKGROUND_BUSY_SHARE}
    assert switched.parameters[contract.PARAM_BACKGROUND_EMBEDDER_MODEL].string_value == contract.EMBEDDER_BACKGROUND_MODEL
    assert cache.parameters[contract.PARAM_FRESH_TEXT_POLICY].string_value == "strict"  # the input is not changed
    back = with_fresh_text_policy(switched, FreshTextPolicy.STRICT, background=False)
    assert back.parameters[contract.PARAM_BACKGROUND_EMBEDDER_MODEL].string_value == contract.EMBEDDER_MODEL
    assert back.parameters[contract.PARAM_BACKGROUND_BUSY_SHARE].string_value == "0.25"  # kept unless given
