"""The GPU run (scene-table build and serving on one CUDA host), one step per subcommand;
``benchmarks/gpu/gpu_check.sh`` runs them in order, each under its own time budget (benchmarks/README.md, "GPU run").
Not installed with larr: run it from the repository root, larr installed::

    python benchmarks/gpu/gpu_check.py precompute --checkpoints RUN --work WORK --out OUT [--device cuda]
    python benchmarks/gpu/gpu_check.py serve --checkpoints RUN --work WORK --out OUT [any `larr bench` flag]
    python benchmarks/gpu/gpu_check.py report --out OUT --steps WORK/steps.tsv

1. ``precompute``: the scene-table build (``larr.export.scene_table.write_scene_table``, what ``larr export`` and
   ``larr embed-scenes`` run) at an LLM shape (default Qwen2.5-0.5B, random weights), bf16 autocast on CUDA, over
   the dataset's scene texts plus ``--texts`` fresh ones as a log would hold them (a seen text + a unique suffix,
   as the benchmark's workload makes them): enough work for tokens/s to be a rate, not a start-up. MFU is
   against the bf16 matmul peak the same call measures. -> ``precompute.json``
2. ``serve``: ``larr bench --profile gpu`` (runtime torch: no onnxruntime-gpu, no TensorRT) -> ``results.json``,
   ``summary.json`` and the CSV tables; no plots (``larr bench --report-only DIR`` draws them later, where
   matplotlib works: it need not under the NumPy 1.26 the Triton stub needs).
3. ``report``: ``README.md``: the device (``nvidia-smi``), each step's budget, time and exit code, the numbers.

Every step writes into ``OUT/<machine>/`` (``larr.benchmarks.machine``: ``gpu-nvidia-h200`` on an H200), the
folder to commit as ``benchmarks/results/<machine>/``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from larr.benchmarks.config import FULLTEXT, LARR, LLM_SHAPES, QWEN25_05B
from larr.benchmarks.machine import Machine, detect_machine
from larr.benchmarks.runner import RESULTS_FILE
from larr.benchmarks.summary import PERF_ANALYZER, SUMMARY_FILE
from larr.serving.server.process import exit_cleanly_on_sigterm

PRECOMPUTE_FILE = "precompute.json"
README_FILE = "README.md"
STEPS = ("setup", "base_run", "precompute", "serve", "report")  # as gpu_check.sh names them in steps.tsv
COMPILED = "compiled"  # precompute.json's key for the `--compile` build
PRECOMPUTE_SEED = 2024  # the bench's seed: `serve` reuses the random-weight embedder `precompute` built


# --------------------------------------------------------------------------------------------- 1. precompute


@dataclass(frozen=True)
class PrecomputeConfig:
    checkpoints: Path  # a trained run: tokenizer, dataset (the LLM itself is random-weight unless tiny)
    work: Path  # where the random-weight embedder is built (larr bench --work: the serve step reuses it)
    out: Path
    llm_size: str = QWEN25_05B
    device: str = "cuda"
    texts: int = 200_000  # fresh texts added to the dataset's (~4k): seconds of work on an H200 at the 0.5B shape
    batch_size: int = 4096  # texts per forward; sorted by length, so little padding
    compile: bool = False  # `larr embed-scenes --compile`: recorded under "compiled" beside the eager build


def run_precompute(config: PrecomputeConfig) -> dict:
    """Build the scene table of ``config.llm_size``'s embedder on ``config.device``; returns what is written."""
    import tempfile

    from larr.benchmarks.models import build_embedder, find_base_run
    from larr.benchmarks.workload import RequestStream, ScenePools, WorkloadSpec
    from larr.data.schema import load_dataset
    from larr.export.scene_table import SceneTableOptions, write_scene_table

    machine = detect_machine(config.device)
    shape = LLM_SHAPES[config.llm_size]
    base = find_base_run(config.checkpoints)
    embedder_dir = build_embedder(shape, base, config.work, PRECOMPUTE_SEED, progress=_echo)
    pools = ScenePools.from_dataset(load_dataset(base.data_dir, splits=("train",)))  # the bench's pools
    # every text of an all-fresh stream is new: K per request, as a log of fresh scene texts would hold them
    stream = RequestStream(pools, WorkloadSpec(unseen_share=1.0, seed=PRECOMPUTE_SEED))
    requests = stream.take(math.ceil(config.texts / len(pools.features)))
    options = SceneTableOptions(batch_size=config.batch_size, device=machine.device, progress=False,
                                compile=config.compile)
    with tempfile.TemporaryDirectory(prefix="larr-gpu-check-") as scratch:
        extra = Path(scratch) / "fresh_texts.jsonl"
        with extra.open("w", encoding="utf-8") as handle:
            for request in requests:
                for feature, text in zip(pools.features, request.scene):
                    handle.write(json.dumps({"feature": feature, "text": text}, ensure_ascii=False) + "\n")
        # the table itself is thrown away: its version only has to be consistent within this call
        table = write_scene_table(embedder_dir, base.data_dir, Path(scratch) / "table", "gpu-check", extra_texts=extra,
                                  options=options, progress=_echo)
    record = {
        "machine": machine.to_json(),
        "llm_size": shape.name,
        "label": shape.label,
        "precision": "bf16 autocast" if machine.device == "cuda" else "fp32",
        "peak": "bf16 matmul, 8192^3" if machine.device == "cuda" else "fp32 matmul, 2048^3",
        "batch_size": config.batch_size,
        "torch_compile": config.compile,
        "fresh_texts": len(requests) * len(pools.features),
        **table.throughput.to_json(),
        "versions": _versions(),
    }
    out_dir = _machine_dir(config.out, machine)
    if config.compile:  # the second build, beside the first: the device tool returns at most 8 files
        record = {**(_read_json(out_dir / PRECOMPUTE_FILE) or {}), COMPILED: record}
    (out_dir / PRECOMPUTE_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    _echo(f"precompute: {table.throughput.summary()} -> {out_dir / PRECOMPUTE_FILE}")
    return record


# --------------------------------------------------------------------------------------------- 2. serve


def run_serve(args: argparse.Namespace) -> int:
    """``larr bench`` with the gpu profile's defaults; summary and tables without plots. Exit codes as larr bench's."""
    from larr.benchmarks.cli import build_config, measure
    from larr.benchmarks.summary import write_outputs

    try:
        config = build_config(args)
    except ValueError as error:
        print(f"gpu_check serve: {error}", file=sys.stderr)
        return 2
    if args.target_seconds is not None:  # the reduced CPU form: every point shorter than the profile's
        grids = {size: replace(grid, target_seconds=args.target_seconds) for size, grid in config.grids.items()}
        config = replace(config, grids=grids)
    code, bench, results = measure(config, "gpu_check serve")  # writes OUT/<machine>/results.json
    if bench is None:
        return code
    write_outputs(results, bench.results_dir)
    _echo(f"serve: {bench.results_dir / RESULTS_FILE} ({results['duration_s']:.0f} s)")
    return 0


# --------------------------------------------------------------------------------------------- 3. report


@dataclass(frozen=True)
class Step:
    name: str
    budget_s: int
    elapsed_s: float
    exit_code: int

    @property
    def outcome(self) -> str:
        return {0: "ok", 124: "over budget (stopped)", 137: "over budget (killed)"}.get(self.exit_code, "failed")


def read_steps(path: Path) -> list[Step]:
    """``name<TAB>budget_s<TAB>elapsed_s<TAB>exit_code`` lines, as gpu_check.sh writes them."""
    steps = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            name, budget, elapsed, code = line.split("\t")
            steps.append(Step(name, int(budget), float(elapsed), int(code)))
    return steps


def device_description() -> str:
    """``nvidia-smi``'s name, memory and driver of each GPU; on a machine without one, the CPU."""
    smi = shutil.which("nvidia-smi")
    if smi:
        query = [smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
        result = subprocess.run(query, capture_output=True, text=True, timeout=30, check=False)
        if result.returncode == 0 and result.stdout.strip():
            return "; ".join(line.strip() for line in result.stdout.splitlines() if line.strip())
    from larr.benchmarks.machine import cpu_model_name

    return f"no GPU (nvidia-smi: none): CPU {cpu_model_name()}"


def write_readme(out: Path, machine_name: str, steps: list[Step], device: str, commit: str) -> Path:
    """``OUT/<machine>/README.md`` from the steps and whatever the steps wrote there."""
    directory = Path(out) / machine_name
    directory.mkdir(parents=True, exist_ok=True)
    precompute = _read_json(directory / PRECOMPUTE_FILE)
    summary, results = _read_json(directory / SUMMARY_FILE), _read_json(directory / RESULTS_FILE)
    lines = [
        f"# GPU check — {device}",
        "",
        f"`benchmarks/gpu/gpu_check.sh` at commit `{commit}`, {time.strftime('%Y-%m-%d %H:%M %Z')}. Device: **{device}**; "
        f"{platform.python_implementation()} {platform.python_version()}, "
        + ", ".join(f"{k} {v}" for k, v in _versions().items()) + ".",
        "",
        "| step | budget s | elapsed s | outcome |",
        "|---|---:|---:|---|",
        *(f"| {s.name} | {s.budget_s} | {s.elapsed_s:.0f} | {s.outcome} |" for s in steps),
        "",
        "## 1. Scene-table precompute",
        "",
    ]
    builds = [(name, record) for name, record in (("eager (the default)", precompute),
                                                  ("`--compile` (each layer)", (precompute or {}).get(COMPILED)))
              if record and "mfu" in record]
    if builds:
        first = builds[0][1]
        lines += [
            f"{first['label']}, {first['precision']}, batches of {first['batch_size']} texts sorted by length, "
            f"{first['texts']:,} texts ({first['fresh_texts']:,} of them fresh), {first['tokens']:,} tokens; "
            "the time counts tokenising (overlapped with the GPU's batch before) and copying rows back.",
            "",
            "| build | seconds | tokens/s | texts/s | model TFLOP/s | peak TFLOP/s | MFU |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *(f"| {name} | {r['seconds']:.2f} | {r['tokens_per_s']:,.0f} | {r['texts_per_s']:,.0f} | "
              f"{r['model_flops'] / r['seconds'] / 1e12:.2f} | {_tera(r['peak_flops'])} ({r['peak']}, same run) | "
              f"{_percent(r['mfu'])} |" for name, r in builds),
        ]
    else:
        lines.append("No result (see the steps above and gpu_check.log).")
    lines += ["", "## 2. Served ensemble", ""]
    if summary and results:
        lines += _serve_lines(summary, results)
    else:
        lines.append("No result (see the steps above and gpu_check.log).")
    lines += [
        "",
        "## Files",
        "",
        "`precompute.json` (step 1), `results.json` (every point: perf_analyzer's rows, Triton's per-model statistics), "
        "`summary.json` (the ratios, `ci95` beside each), `points.csv`, `breakdown.csv`, `summary.csv`; the log is "
        "`gpu_check.log` beside this folder. Plots: `larr bench --report-only <this folder>`.",
    ]
    path = directory / README_FILE
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _serve_lines(summary: dict, results: dict) -> list[str]:
    head, config = summary["headline"], summary["method"]
    by_share = summary["throughput_ratio_vs_fulltext_by_fresh_share"]
    ci = summary.get("throughput_ratio_vs_fulltext_by_fresh_share_ci95") or {}
    hit_rates = summary["cache_hit_rate_by_unseen_share"][head["llm_size"]]
    (size,) = (s for s in results["sizes"] if s["llm_size"] == head["llm_size"])

    def measured(variant: str, share: float) -> tuple[float | None, float | None, int]:
        """Mean requests/s and p99 (ms) over repeats of a perf_analyzer point at the headline concurrency."""
        points = [p for p in size["points"] if p["variant"] == variant and p["method"] == PERF_ANALYZER
                  and p["concurrency"] == head["concurrency"] and abs(p["unseen_share"] - share) < 1e-9]
        if not points:
            return None, None, 0
        return (statistics.fmean(p["throughput"] for p in points), statistics.fmean(p["p99_us"] for p in points) / 1e3,
                sum(p["requests"] for p in points))

    fulltext_rate, fulltext_p99, fulltext_requests = measured(FULLTEXT, head["unseen_share"])
    lines = [
        f"{head['label']}, served by `larr bench --profile gpu`: python backends running PyTorch on the "
        f"{summary['device']} (runtime torch), the full-text baseline through the same embedder model; concurrency "
        f"{head['concurrency']}, {config['candidates']} candidates per request, warm from the scene table plus "
        f"{config['warmup_requests']} warm-up requests; {summary['repeats']} repeat(s); perf_analyzer on the same "
        "machine as the server.",
        "",
        "| fresh texts | LARR req/s | LARR p99 ms | LARR / full-text req/s | cache hit rate | requests |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for share, ratio in sorted(by_share.items(), key=lambda item: float(item[0])):
        rate, p99, requests = measured(LARR, float(share))
        interval = f" ± {ci[share]:.2f}" if ci.get(share) is not None else ""
        lines.append(f"| {float(share):.0%} | {_fixed(rate, '.1f')} | {_fixed(p99, '.1f')} | {_fixed(ratio, '.2f')}×"
                     f"{interval} | {_percent(hit_rates.get(share))} | {requests} |")
    lines += [
        "",
        f"Full-text baseline (measured at {head['unseen_share']:.0%}; its work does not depend on the share): "
        f"{_fixed(fulltext_rate, '.1f')} req/s, p99 {_fixed(fulltext_p99, '.1f')} ms, {fulltext_requests} requests. "
        f"At {head['unseen_share']:.0%}: p99 ratio LARR / full-text {_fixed(summary['p99_ratio_vs_fulltext'], '.2f')}, "
        f"LARR / cache off {_fixed(summary['throughput_ratio_vs_cache_off'], '.2f')}×, token bound "
        f"{_fixed(summary['token_bound_vs_fulltext'], '.2f')}×. The export's own table build (the dataset's texts "
        f"only, one pass): MFU {_percent(summary.get('embedder_mfu_precompute'))}. Skipped: "
        f"{', '.join(results['config']['skip']) or 'nothing'}.",
    ]
    return lines


def _fixed(value: float | None, spec: str) -> str:
    return "n/a" if value is None else f"{value:{spec}}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _tera(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 1e12:.1f}"


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


# --------------------------------------------------------------------------------------------- helpers


def _machine_dir(out: Path, machine: Machine) -> Path:
    directory = Path(out) / machine.name
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for package in ("torch", "transformers", "numpy", "tritonclient", "nvidia-pytriton"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _echo(line: str) -> None:
    print(line, flush=True)  # flushed: gpu_check.sh tees the output into its log


def _commit() -> str:
    # --dirty: the device tool copies the working tree, uncommitted changes included (and its copy's git metadata
    # was seen stale: a clean-looking commit there need not be the code that ran)
    result = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else "unknown (no .git)"


# --------------------------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    from larr.benchmarks.cli import configure_bench_parser

    exit_cleanly_on_sigterm()  # a step stopped at its budget stops the servers it started
    parser = argparse.ArgumentParser(prog="python benchmarks/gpu/gpu_check.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    precompute = commands.add_parser("precompute", help="step 1: the scene-table build at an LLM shape")
    defaults = PrecomputeConfig(Path(), Path(), Path())
    precompute.add_argument("--checkpoints", type=Path, required=True, help="trained run (tokenizer and dataset)")
    precompute.add_argument("--work", type=Path, required=True, help="larr bench --work: the embedder is built there")
    precompute.add_argument("--out", type=Path, required=True, help="results go to OUT/<machine>/")
    precompute.add_argument("--llm-size", default=defaults.llm_size, choices=sorted(LLM_SHAPES))
    precompute.add_argument("--device", default=defaults.device, choices=("auto", "cpu", "cuda"))
    precompute.add_argument("--texts", type=int, default=defaults.texts, help="fresh texts beside the dataset's")
    precompute.add_argument("--batch-size", type=int, default=defaults.batch_size, help="texts per forward")
    precompute.add_argument("--compiled", action="store_true", help="then a second build with `larr embed-scenes "
                            f"--compile` (torch.compile per layer), recorded under {COMPILED!r} in {PRECOMPUTE_FILE}")

    serve = commands.add_parser("serve", help="step 2: larr bench --profile gpu, without plots")
    configure_bench_parser(serve)
    serve.set_defaults(profile="gpu")
    serve.add_argument("--target-seconds", type=float, help="seconds per measured point (default: the profile's grid)")

    report = commands.add_parser("report", help="step 3: OUT/<machine>/README.md")
    report.add_argument("--out", type=Path, required=True)
    report.add_argument("--steps", type=Path, required=True, help="the steps.tsv gpu_check.sh wrote")
    report.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="whose results folder")

    args = parser.parse_args(argv)
    if args.command == "precompute":
        config = PrecomputeConfig(
            checkpoints=args.checkpoints, work=args.work, out=args.out, llm_size=args.llm_size, device=args.device,
            texts=args.texts, batch_size=args.batch_size,
        )
        run_precompute(config)  # written before the second build starts: a step stopped at its budget keeps it
        if args.compiled:
            run_precompute(replace(config, compile=True))
        return 0
    if args.command == "serve":
        return run_serve(args)
    machine = detect_machine(args.device)
    path = write_readme(args.out, machine.name, read_steps(args.steps), device_description(), _commit())
    print(path.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
