"""``larr bench``: every measurement of the benchmark report in one command (and ``larr soak``'s flags,
at the end: the soak itself is larr.benchmarks.soak).

    larr bench                                    # the published grid (profile full; < 30 min on 2 CPU cores)
    larr bench --profile quick                    # a few minutes: tiny + 135M shape, two concurrency levels
    larr bench --profile smoke                    # the tiny model only, seconds per point (the integration test)
    larr bench --profile store                    # the 135M shape at 0/1/10 % fresh texts, warm from the scene table
    larr bench --profile gpu                      # the 0.5B shape on one CUDA GPU, PyTorch in the python backends
    larr bench --report-only benchmarks/results/cpu-2core-amd-epyc   # redraw plots and tables from results.json

Needs a trained run (default ``runs/demo/run``, made by ``make demo``), tritonserver (nvidia-pytriton),
perf_analyzer (tritonclient[all]) and the bench extra (FastAPI, uvicorn, httpx, matplotlib). Writes
``OUT/<machine>/``: results.json (every point), summary.json (the ratios), points.csv, breakdown.csv
(per-model Triton statistics), summary.csv, report.md and three PNGs. On a GPU host (``--device auto``
finds it) every model runs on the GPU: ONNX Runtime CUDA in the python backends (``--runtime torch``: PyTorch,
no onnxruntime-gpu needed), PyTorch CUDA in FastAPI.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from dataclasses import fields
from pathlib import Path

from larr.benchmarks.config import BENCH_PRECISIONS, LLM_SHAPES, PROFILES, BenchConfig
from larr.serving.fresh_text import FreshTextPolicy
from larr.serving.runtime import RUNTIMES
from larr.serving.server.process import exit_cleanly_on_sigterm

REPORT_FILE = "report.md"
SKIPPABLE = ("fastapi", "inprocess", "saturation")


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _help(name: str) -> str:
    """A BenchConfig field's help text (stated once, on the field)."""
    text = next(f.metadata["help"] for f in fields(BenchConfig) if f.name == name)
    return text.replace("%", "%%")  # argparse formats help strings with %


def configure_bench_parser(parser: argparse.ArgumentParser) -> None:
    defaults = PROFILES["full"]
    add = parser.add_argument
    add("--profile", default="full", choices=sorted(PROFILES),
        help="grid size: full (published), quick, smoke, store (the scene-store headline), gpu (0.5B on one CUDA GPU)")
    add("--checkpoints", type=Path, default=defaults.checkpoints, help="trained run folder (default: `make demo`'s)")
    add("--out", type=Path, default=defaults.out, help="results go to OUT/<machine>/")
    add("--work", type=Path, default=defaults.work, help="random-weight LLMs and exported repositories (reused)")
    add("--llm-sizes", type=_names, help=f"comma-separated subset of {', '.join(LLM_SHAPES)} (default: the profile's)")
    add("--headline-size", help="LLM size whose ratios head summary.json (default: the profile's, else the largest)")
    add("--device", choices=("auto", "cpu", "cuda"), help="where the models run (default: the profile's)")
    add("--runtime", choices=RUNTIMES, help="default: the profile's; " + _help("runtime"))
    add("--candidates", type=int, default=defaults.candidates, help="candidate items per request (N)")
    add("--headline-concurrency", type=int, help="measure the headline (and every sweep's level that stands for it) "
        "at this concurrency instead of the profile's; concurrency 1 is measured still")
    add("--warmup", type=int, help="warm-up requests per variant (default: the profile's)")
    add("--fresh-text-policy", choices=[policy.value for policy in FreshTextPolicy], default=defaults.fresh_text_policy,
        help=_help("fresh_text_policy"))
    add("--miss-deadline-ms", type=float, default=defaults.miss_deadline_ms, help=_help("miss_deadline_ms"))
    add("--background-busy-share", type=float, default=defaults.background_busy_share, help=_help("background_busy_share"))
    add("--embedder-precision", choices=BENCH_PRECISIONS, default=defaults.embedder_precision,
        help=_help("embedder_precision"))
    add("--embedder-width-ratio", type=float, default=defaults.embedder_width_ratio, help=_help("embedder_width_ratio"))
    add("--repeats", type=int, help="independent repeats of every point (default: the profile's); " + _help("repeats"))
    add("--stream-seed", type=int, help=_help("stream_seed"))
    add("--skip", type=_names, help=f"comma-separated parts to leave out: {', '.join(SKIPPABLE)} (default: the "
        "profile's; '' leaves out none)")
    add("--rebuild", action="store_true", help="re-export the models even if the work folder has them")
    add("--report-only", type=Path, metavar="DIR", help="only rebuild summary, tables and plots from DIR/results.json")


def build_config(args: argparse.Namespace):
    """The BenchConfig the flags describe (ValueError for inconsistent flags)."""
    from larr.benchmarks.config import profile, with_headline_concurrency

    base = PROFILES[args.profile]
    sizes = args.llm_sizes or base.llm_sizes
    unknown = [s for s in sizes if s not in LLM_SHAPES]
    if unknown:
        raise ValueError(f"unknown LLM size(s) {unknown}; known: {', '.join(LLM_SHAPES)}")
    skip = base.skip if args.skip is None else args.skip
    bad_skip = [s for s in skip if s not in SKIPPABLE]
    if bad_skip:
        raise ValueError(f"--skip: unknown part(s) {bad_skip}; one of {', '.join(SKIPPABLE)}")
    headline = args.headline_size or (base.headline_size if base.headline_size in sizes else max(
        sizes, key=lambda s: LLM_SHAPES[s].hidden_size * max(LLM_SHAPES[s].num_hidden_layers, 1)))
    grids = dict(base.grids)
    for size in sizes:
        # a size outside the profile's grids gets the grid of the profile's largest size
        grids.setdefault(size, base.grids[base.llm_sizes[-1]])
    if args.candidates < 1:
        raise ValueError(f"--candidates must be >= 1, got {args.candidates}")
    headline_concurrency = base.headline_concurrency
    if args.headline_concurrency is not None:
        if args.headline_concurrency < 2:
            raise ValueError(f"--headline-concurrency must be >= 2 (1 is always measured), got {args.headline_concurrency}")
        grids = {size: with_headline_concurrency(grid, base.headline_concurrency, args.headline_concurrency)
                 for size, grid in grids.items()}
        headline_concurrency = args.headline_concurrency
    overrides = dict(
        checkpoints=args.checkpoints, out=args.out, work=args.work, llm_sizes=tuple(sizes), headline_size=headline,
        grids=grids, headline_concurrency=headline_concurrency, device=args.device or base.device,
        runtime=args.runtime or base.runtime, candidates=args.candidates,
        skip=tuple(skip), rebuild=args.rebuild,
        fresh_text_policy=args.fresh_text_policy, background_busy_share=args.background_busy_share,
        miss_deadline_ms=args.miss_deadline_ms,
        embedder_precision=args.embedder_precision, embedder_width_ratio=args.embedder_width_ratio,
    )
    if args.warmup is not None:
        if args.warmup < 1:
            raise ValueError(f"--warmup must be >= 1, got {args.warmup}")
        overrides["warmup_requests"] = args.warmup
    if args.repeats is not None:
        overrides["repeats"] = args.repeats
    if args.stream_seed is not None:
        overrides["stream_seed"] = args.stream_seed
    return profile(args.profile, **overrides)


def write_report(results: dict, directory: Path) -> dict:
    """summary.json, the CSV tables, the plots and report.md from a results document."""
    from larr.benchmarks.plots import plot_all
    from larr.benchmarks.summary import report_markdown, write_outputs

    summary = write_outputs(results, directory)
    plots = plot_all(results, summary, directory)
    (Path(directory) / REPORT_FILE).write_text(report_markdown(summary, plots), encoding="utf-8")
    return summary


def measure(config, prog: str):
    """Run the benchmark ``config`` describes: ``(0, BenchRun, results)``, or ``(exit code, None, None)`` after one
    line on stderr -- 2 for what the user can fix (setup, missing tools), 1 for a failed measurement."""
    from larr.benchmarks.loadgen import LoadError
    from larr.benchmarks.models import BenchSetupError
    from larr.benchmarks.perf import PerfAnalyzerError
    from larr.benchmarks.perf_install import PerfAnalyzerNotFoundError
    from larr.benchmarks.runner import BenchRun
    from larr.serving.server.install import TritonNotFoundError
    from larr.serving.server.process import ServerStartError

    try:
        bench = BenchRun(config)
        return 0, bench, bench.run()
    except (BenchSetupError, TritonNotFoundError, PerfAnalyzerNotFoundError) as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 2, None, None
    except (ServerStartError, PerfAnalyzerError, LoadError) as error:
        print(f"{prog}: a measurement failed: {error}", file=sys.stderr)
        return 1, None, None


def run_bench(args: argparse.Namespace) -> int:
    """Run ``larr bench``; returns the exit code (2 with a message on stderr for a clear user error)."""
    from larr.benchmarks.runner import RESULTS_FILE

    if args.report_only is not None:
        path = args.report_only / RESULTS_FILE
        if not path.exists():
            print(f"larr bench: {path} does not exist", file=sys.stderr)
            return 2
        summary = write_report(json.loads(path.read_text(encoding="utf-8")), args.report_only)
        print((args.report_only / REPORT_FILE).read_text(encoding="utf-8"))
        return 0 if summary else 1
    try:
        config = build_config(args)
    except ValueError as error:
        print(f"larr bench: {error}", file=sys.stderr)
        return 2

    code, bench, results = measure(config, "larr bench")
    if bench is None:
        return code
    write_report(results, bench.results_dir)
    print()
    print((bench.results_dir / REPORT_FILE).read_text(encoding="utf-8"))
    print(f"results: {bench.results_dir} ({results['duration_s'] / 60:.1f} min)")
    return 0


def configure_soak_parser(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`larr.benchmarks.soak.SoakConfig` field (``fresh_share`` -> ``--fresh-share``),
    its type, default and help taken from the field."""
    from larr.benchmarks.soak import SoakConfig

    types = {"Path": Path, "float": float, "int": int}
    for spec in dataclasses.fields(SoakConfig):
        required = spec.default is dataclasses.MISSING
        parser.add_argument(
            "--" + spec.name.replace("_", "-"), dest=spec.name, type=types[str(spec.type)], required=required,
            default=None if required else spec.default, help=spec.metadata["help"] + ("" if required else " (default: %(default)s)"),
        )


def run_soak_command(args: argparse.Namespace) -> int:
    """``larr soak``: 0 passed, 1 failed (errors, a stub reload or RSS growth), 2 usage or setup error."""
    from larr.benchmarks.soak import SoakConfig, run_soak, write_outputs
    from larr.serving.server.install import TritonNotFoundError
    from larr.serving.server.process import ServerStartError

    try:
        config = SoakConfig(**{spec.name: getattr(args, spec.name) for spec in dataclasses.fields(SoakConfig)})
    except ValueError as error:
        print(f"larr soak: {error}", file=sys.stderr)
        return 2
    try:
        result = run_soak(config, command=shlex.join(["larr", "soak", *sys.argv[2:]]))
    except (FileNotFoundError, TritonNotFoundError, ServerStartError) as error:
        print(f"larr soak: {error}", file=sys.stderr)
        return 2
    paths = write_outputs(result, config.out)
    print()
    print(paths["readme"].read_text(encoding="utf-8"))
    for reason in result.failures():
        print(f"larr soak: {reason}", file=sys.stderr)
    return 1 if result.failures() else 0


def main(argv: list[str] | None = None) -> int:
    exit_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(prog="larr bench", description=__doc__.splitlines()[0])
    configure_bench_parser(parser)
    return run_bench(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
