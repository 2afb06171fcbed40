"""The export options the serving side reads back: fresh_text_policy deadline with its miss_deadline_ms, and the
torch runtime's shape buckets -- written by larr export, read by FeatureCacheSettings and GraphSettings."""

from __future__ import annotations

import pytest
from google.protobuf import json_format

from larr.contract import PARAM_MISS_DEADLINE_MS, PARAM_SHAPE_BUCKETS
from larr.export.model_configs import ctr_config, embedder_config, feature_cache_config, with_fresh_text_policy
from larr.export.options import ModelFacts, RepositoryOptions
from larr.serving.buckets import BucketGrid
from larr.serving.feature_cache import FeatureCacheSettings
from larr.serving.fresh_text import FreshTextPolicy
from larr.serving.graphs import GraphSettings, TorchDtype
from larr.serving.model_config import model_parameters

FACTS = ModelFacts(("weather", "place"), embedding_dim=8, scene_inputs=2, embedder_version="v", max_length=48,
                   vocab_size=300, scene_vocab_sizes=(4, 9))


def as_triton_json(config) -> dict:
    """A config as the python backend hands it over: JSON with the proto's field names."""
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def test_the_deadline_policy_and_its_deadline_reach_the_feature_cache() -> None:
    options = RepositoryOptions(fresh_text_policy="deadline", miss_deadline_ms=20)
    settings = FeatureCacheSettings.from_model_config(as_triton_json(feature_cache_config(options, FACTS)))
    assert settings.fresh_text_policy is FreshTextPolicy.DEADLINE and settings.miss_deadline_ms == 20.0
    # a serving-time switch (the benchmarks flip a reused repository) may set another deadline
    switched = with_fresh_text_policy(feature_cache_config(options, FACTS), FreshTextPolicy.DEADLINE, False,
                                      miss_deadline_ms=0.0)
    assert model_parameters(as_triton_json(switched))[PARAM_MISS_DEADLINE_MS] == "0.0"
    with pytest.raises(ValueError, match="miss_deadline_ms must be a finite number >= 0"):
        RepositoryOptions(fresh_text_policy="deadline", miss_deadline_ms=-1)


def test_pow2_buckets_cover_each_models_limits_on_the_torch_runtime() -> None:
    options = RepositoryOptions(runtime="torch", device="cuda", shape_buckets="pow2", embedder_max_batch=64,
                                batch_requests=8, max_candidates=100)
    embedder = model_parameters(as_triton_json(embedder_config(options, FACTS)))
    assert BucketGrid.parse(embedder[PARAM_SHAPE_BUCKETS]) == BucketGrid((1, 2, 4, 8, 16, 32, 64), (16, 32, 48))
    ctr = as_triton_json(ctr_config(options, FACTS))
    # requests per run x their candidates in all, up to 8 x 100
    assert BucketGrid.parse(model_parameters(ctr)[PARAM_SHAPE_BUCKETS]) == BucketGrid(
        (1, 2, 4, 8), (16, 32, 64, 128, 256, 512, 800))
    settings = GraphSettings.from_params(model_parameters(ctr), options.device)
    assert settings.capture and settings.dtype is TorchDtype.BFLOAT16
    # off (the default): no parameter, the runtime stays eager
    plain = RepositoryOptions(runtime="torch", device="cuda")
    assert PARAM_SHAPE_BUCKETS not in model_parameters(as_triton_json(embedder_config(plain, FACTS)))


@pytest.mark.parametrize("overrides", [{"runtime": "onnxruntime"}, {"target": "gpu", "runtime": "torch"}])
def test_shape_buckets_are_for_the_torch_runtime_only(overrides) -> None:
    with pytest.raises(ValueError, match="shape_buckets applies to --target cpu --runtime torch"):
        RepositoryOptions(shape_buckets="pow2", **overrides)
