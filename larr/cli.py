"""The ``larr`` command line: data, train, export, embed-scenes, serve, query, demo, bench.

Subcommands import their (heavy) modules only when run, so ``larr query`` never imports torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _data_synth(args: argparse.Namespace) -> int:
    from larr.data.schema import write_dataset
    from larr.data.synth import SynthConfig, generate

    config = SynthConfig(seed=args.seed)
    if args.scale != 1.0:
        config.train_rows = int(config.train_rows * args.scale)
        config.valid_rows = int(config.valid_rows * args.scale)
        config.test_rows = int(config.test_rows * args.scale)
    dataset = generate(config)
    write_dataset(args.out, dataset)
    sizes = ", ".join(f"{split} {len(rows)}" for split, rows in dataset.splits.items())
    print(f"wrote {args.out}: {dataset.info.num_users} users, {dataset.info.num_items} items, {sizes}")
    return 0


def _data_frappe(args: argparse.Namespace) -> int:
    from larr.data.frappe import convert_frappe

    dataset = convert_frappe(Path(args.raw), Path(args.out), seed=args.seed, limit_users=args.limit_users)
    sizes = ", ".join(f"{split} {len(rows)}" for split, rows in dataset.splits.items())
    print(f"wrote {args.out}: {sizes}")
    return 0


def _data_validate(args: argparse.Namespace) -> int:
    from larr.data.schema import load_dataset

    dataset = load_dataset(args.path)
    sizes = ", ".join(f"{split} {len(rows)}" for split, rows in dataset.splits.items())
    print(f"{args.path}: valid ({sizes}; scene features {list(dataset.info.scene_features)})")
    return 0


def _train(args: argparse.Namespace) -> int:
    from larr.training.cli import run_from_args

    return run_from_args(args)


def _export(args: argparse.Namespace) -> int:
    from larr.export.cli import run_export

    return run_export(args)


def _embed_scenes(args: argparse.Namespace) -> int:
    from larr.export.scene_table import run_embed_scenes

    return run_embed_scenes(args)


def _serve(args: argparse.Namespace) -> int:
    from larr.serving.launcher import serve_main

    return serve_main(
        args.model_repository,
        args.host,
        args.grpc_port,
        args.http_port,
        args.metrics_port,
        args.admin_key,
        supervisor_port=args.supervisor_port,
        supervise=args.supervise,
    )


def _query(args: argparse.Namespace) -> int:
    from larr.clients.cli import run_query

    return run_query(args)


def _bench(args: argparse.Namespace) -> int:
    from larr.benchmarks.cli import run_bench

    return run_bench(args)


def _soak(args: argparse.Namespace) -> int:
    from larr.benchmarks.cli import run_soak_command

    return run_soak_command(args)


def _demo(args: argparse.Namespace) -> int:
    from larr.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="larr", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="make or check datasets").add_subparsers(dest="data_command", required=True)
    synth = data.add_parser("synth", help="generate the synthetic food-delivery dataset")
    synth.add_argument("--out", required=True, type=Path)
    synth.add_argument("--seed", type=int, default=2024)
    synth.add_argument("--scale", type=float, default=1.0, help="multiply the number of rows per split")
    synth.set_defaults(func=_data_synth)
    frappe = data.add_parser("frappe", help="convert raw Frappe + the BARS Frappe_x1 split into the schema")
    frappe.add_argument("--raw", default="../shared/data/frappe", help="folder with frappe.csv, meta.csv, nfm_split/")
    frappe.add_argument("--out", required=True, type=Path)
    frappe.add_argument("--seed", type=int, default=2024, help="seed of the train negatives")
    frappe.add_argument("--limit-users", type=int, default=None, help="keep only the first N users (smoke runs)")
    frappe.set_defaults(func=_data_frappe)
    validate = data.add_parser("validate", help="load a dataset folder and report the first schema error")
    validate.add_argument("path", type=Path)
    validate.set_defaults(func=_data_validate)

    from larr.training.cli import configure_train_parser  # light: argparse only, torch is imported lazily

    train = commands.add_parser("train", help="run training stages 1-3 (see `larr train all --help`)")
    configure_train_parser(train)
    train.set_defaults(func=_train)

    from larr.clients.cli import configure_query_parser
    from larr.export.cli import configure_export_parser

    export = commands.add_parser("export", help="trained run -> ONNX / TensorRT -> Triton model repository")
    configure_export_parser(export)
    export.set_defaults(func=_export)

    from larr.export.scene_table import configure_embed_scenes_parser

    embed_scenes = commands.add_parser(
        "embed-scenes", help="embed every known scene text offline into a versioned scene table (larr.export.scene_table)"
    )
    configure_embed_scenes_parser(embed_scenes)
    embed_scenes.set_defaults(func=_embed_scenes)

    from larr.serving.launcher import DEFAULT_SUPERVISOR_PORT  # light: stdlib and prometheus_client

    serve = commands.add_parser("serve", help="run tritonserver on a model repository (loopback, safe defaults)")
    serve.add_argument("--model-repository", default="model_repository", type=Path)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    serve.add_argument("--grpc-port", type=int, default=8001)
    serve.add_argument("--http-port", type=int, default=8000)
    serve.add_argument("--metrics-port", type=int, default=8002)
    serve.add_argument("--admin-key", help="key for the restricted admin protocols (default: random, printed)")
    serve.add_argument(
        "--supervisor-port",
        type=int,
        default=DEFAULT_SUPERVISOR_PORT,
        help="port of the stub supervisor's Prometheus metrics (larr_degraded, larr_stub_restarts_total)",
    )
    serve.add_argument(
        "--no-supervise",
        dest="supervise",
        action="store_false",
        help="do not reload a model whose python-backend stub died (the model repository is then fixed at start)",
    )
    serve.set_defaults(func=_serve)

    query = commands.add_parser("query", help="score candidate items for a user in a scene over gRPC")
    configure_query_parser(query)
    query.set_defaults(func=_query)

    demo = commands.add_parser("demo", help="the whole story: data -> train -> export -> serve -> query")
    demo.add_argument("--out", default=Path("runs/demo"), type=Path, help="run folder (data, checkpoints, repository)")
    demo.add_argument("--config", default="tiny", help="training config (default: the shipped tiny config)")
    demo.add_argument("--resume", action="store_true", help="reuse finished stages in --out")
    demo.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a training config value, e.g. --set threads=1 on a busy machine; repeatable",
    )
    demo.set_defaults(func=_demo)

    from larr.benchmarks.cli import configure_bench_parser, configure_soak_parser

    bench = commands.add_parser("bench", help="perf_analyzer harness: LARR vs full-text, cache off, FastAPI, MFU")
    configure_bench_parser(bench)
    bench.set_defaults(func=_bench)
    soak = commands.add_parser("soak", help="serve a repository under a bounded load; errors, p50/p99 and RSS over time")
    configure_soak_parser(soak)
    soak.set_defaults(func=_soak)
    return parser



def main(argv: list[str] | None = None) -> int:
    from larr.serving.launcher import exit_cleanly_on_sigterm  # cheap: no torch, no tritonclient

    exit_cleanly_on_sigterm()
    # Before torch or ONNX Runtime load: OpenMP threads that spin while waiting turn any other busy process
    # on a small machine into a 10-20x slowdown (measured: 8 s vs 0.6 s per stage-1 step on 2 cores next
    # to one busy process). Passive waiting costs little when the machine is idle. Set it to override.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
