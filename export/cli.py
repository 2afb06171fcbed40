"""``larr export``: a trained run -> a Triton model repository.

    larr export --checkpoints runs/tiny --target cpu --out model_repository
    larr export --checkpoints runs/tiny --target cpu --embedder-precision int8 --out model_repository   # int8 CPU
    larr export --checkpoints runs/tiny --target cpu --device cuda --out model_repository   # GPU host, no TensorRT
    larr export --checkpoints runs/tiny --target gpu --out model_repository                 # TensorRT plans

The parser is argparse only; torch and the exporters are imported when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from larr.export.embedder_precision import EmbedderPrecision
from larr.export.repository import TARGETS, RepositoryError, RepositoryOptions, not_servable_reason
from larr.layout import SERVABLE_VARIANTS, Variant
from larr.serving.fresh_text import FreshTextPolicy
from larr.serving.runtime import RUNTIMES
from larr.serving.stores import StoreKind


def configure_export_parser(parser: argparse.ArgumentParser) -> None:
    defaults = RepositoryOptions()
    add = parser.add_argument
    add("--checkpoints", required=True, type=Path, help="run folder of `larr train` (config.yaml, embed/, ctr/)")
    add("--out", required=True, type=Path, help="model repository folder to write (e.g. model_repository)")
    add(
        "--target", required=True, choices=TARGETS,
        help="cpu: python-backend models on ONNX Runtime or PyTorch (any Triton, also on GPUs via --device cuda); "
        "gpu: TensorRT plans (needs TensorRT and a CUDA GPU here, the NGC image to serve)",
    )
    # every variant is a choice, so that asking for an unservable one gets the reason, not argparse's "invalid choice"
    unservable = "; ".join(f"{v.value}: {not_servable_reason(v)}" for v in Variant if not v.servable)
    add("--variant", default=defaults.variant.value, choices=[v.value for v in Variant],
        help=f"which trained CTR model to serve: one of {[v.value for v in SERVABLE_VARIANTS]}. Not servable by the "
        f"ensemble ({unservable}); score those offline with `larr evaluate`")
    add("--scene-store", default=defaults.scene_store.value, choices=[k.value for k in StoreKind],
        help="where feature_cache keeps scene vectors (model-config parameter scene_store)")
    add("--redis-url", default=defaults.redis_url, help="scene store redis: redis://host:port/db shared by the replicas")
    add("--redis-socket-timeout-ms", type=float, default=defaults.redis_socket_timeout_ms,
        help="scene store redis: longest wait for one Redis read/write before it counts as a miss")
    add("--redis-retry-after-s", type=float, default=defaults.redis_retry_after_s,
        help="scene store redis: after a failure, skip Redis this long, then reconnect by itself")
    add("--extra-texts", default=defaults.extra_texts,
        help="JSON lines {\"feature\": name, \"text\": ...} to embed into the scene table beside the dataset's texts")
    add("--fresh-text-policy", default=defaults.fresh_text_policy.value, choices=[p.value for p in FreshTextPolicy],
        help="a scene text no store holds: strict = embed it before answering; async = score with the unseen-text "
        "row (zeros) now, embed it in the background (model-config parameter fresh_text_policy)")
    add("--background-busy-share", type=float, default=defaults.background_busy_share,
        help="fresh-text-policy async: the largest share of wall time the background embedder may spend embedding "
        "(below 1 it pauses between batches: shorter request tails, new texts learned later)")
    add("--cache-capacity", type=int, default=defaults.cache_capacity, help="feature cache bound, in entries")
    add("--cache-max-bytes", type=int, default=defaults.cache_max_bytes,
        help="feature cache bound, in bytes: each entry counts its vector + the Python objects around it; "
        "the process holds about twice this (README) (0 = no byte bound)")
    add("--batch-requests", type=int, default=defaults.batch_requests,
        help="cpu target: requests one execute of feature_cache and ctr may serve (the ensemble's max_batch_size); "
        "0 = one request per execute")
    add("--max-candidates", type=int, default=defaults.max_candidates, help="most candidate items per request")
    add("--embedder-max-batch", type=int, default=defaults.embedder_max_batch, help="texts per embedder batch")
    add("--feature-cache-instances", type=int, default=defaults.feature_cache_instances,
        help="feature_cache instances (processes; each has its own in-process tiers)")
    add("--embedder-instances", type=int, default=defaults.embedder_instances, help="embedder model instances")
    add("--ctr-instances", type=int, default=defaults.ctr_instances, help="ctr model instances")
    add("--runtime", default=defaults.runtime, choices=RUNTIMES, help="cpu target: what runs the models")
    add("--embedder-precision", default=defaults.embedder_precision.value, choices=[p.value for p in EmbedderPrecision],
        help="cpu target, onnxruntime: the embedder graph's precision (int8: dynamic quantisation for CPU; fp16: for "
        "--device cuda); the scene table is embedded by the same graph")
    add("--device", default=defaults.device, help="cpu target: 'cpu' or 'cuda[:N]' for the embedder and ctr")
    add("--intra-op-threads", type=int, default=defaults.intra_op_threads, help="threads per model, 0 = default")
    add("--num-users", type=int, help="user id range (default: from the run's dataset)")
    add("--num-items", type=int, help="item id range (default: from the run's dataset)")
    add("--adapters", type=Path, help="folder with <model>/1/model.py adapters (default: the repo's model_repository/)")


def run_export(args: argparse.Namespace) -> int:
    """Run ``larr export``; returns the exit code (2 with a message on stderr for a clear user error)."""
    try:  # the flags alone, before anything heavy is imported
        options = RepositoryOptions(
            target=args.target, variant=args.variant, cache_capacity=args.cache_capacity,
            max_candidates=args.max_candidates, embedder_max_batch=args.embedder_max_batch,
            embedder_instances=args.embedder_instances, ctr_instances=args.ctr_instances, runtime=args.runtime,
            feature_cache_instances=args.feature_cache_instances, scene_store=args.scene_store,
            cache_max_bytes=args.cache_max_bytes, redis_url=args.redis_url, extra_texts=args.extra_texts, batch_requests=args.batch_requests,
            fresh_text_policy=args.fresh_text_policy, background_busy_share=args.background_busy_share,
            redis_socket_timeout_ms=args.redis_socket_timeout_ms, redis_retry_after_s=args.redis_retry_after_s,
            device=args.device, intra_op_threads=args.intra_op_threads, embedder_precision=args.embedder_precision,
        )
    except ValueError as error:
        print(f"larr export: {error}", file=sys.stderr)
        return 2

    from larr.export.repository import write_repository
    from larr.export.tensorrt_build import TensorRTUnavailableError

    try:
        write_repository(
            args.checkpoints, args.out, options, num_users=args.num_users, num_items=args.num_items,
            adapters_dir=args.adapters, progress=lambda line: print(line, flush=True),
        )
    except TensorRTUnavailableError as error:
        print(
            f"larr export --target gpu: {error}\n"
            "On a GPU host without TensorRT, serve with ONNX Runtime on the GPU instead: --target cpu --device cuda",
            file=sys.stderr,
        )
        return 2
    except RepositoryError as error:
        print(f"larr export: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="larr export", description=__doc__.splitlines()[0])
    configure_export_parser(parser)
    return run_export(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
