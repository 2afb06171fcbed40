"""``larr demo``: the whole story on the embedded synthetic data, in one command.

    larr demo --out runs/demo                            # the quick profile (make demo): shorter stages
    larr demo --config tiny --out runs/demo-full         # the full tiny config (make demo-full)

generate data -> train stages 1-3 (a shipped config, ``quick`` by default) -> export ONNX + the Triton model repository
-> start tritonserver on loopback -> score every shop for a few scenes over gRPC (with ``LarrClient``)
-> print the top shops per scene and the feature-cache counters -> stop the server -> a short
benchmark (``larr bench --profile smoke``: perf_analyzer, LARR vs the full-text baseline and more).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from larr.layout import RunLayout, Stage
from larr.provenance import code_commit

SCENES = (
    # (title, scene) — some texts are paraphrases the models never saw in training ("downpour", "blizzard")
    ("rainy lunch break at the office, searching noodles",
     {"time_slot": "lunch time", "weather": "downpour", "place": "office", "recent_search": "ramen",
      "recent_clicks": "Golden Noodle House"}),
    ("hot afternoon on campus",
     {"time_slot": "3 pm", "weather": "sweltering", "place": "campus", "recent_search": "milk tea",
      "recent_clicks": "Happy Bubble Tea"}),
    ("late night party in a blizzard",
     {"time_slot": "after midnight", "weather": "blizzard", "place": "house party", "recent_search": "pizza",
      "recent_clicks": "Lucky Pizzeria, Royal BBQ Skewers"}),
    ("early morning before the gym",
     {"time_slot": "dawn", "weather": "pleasant", "place": "fitness center", "recent_search": "salad",
      "recent_clicks": "Jade Green Bowl"}),
)
DEMO_USER = 7
TOP = 5
TIMINGS_FILE = "timings.json"  # in --out: each step's wall seconds, the machine and the commit


def run_demo(args: argparse.Namespace) -> int:
    from larr.benchmarks.cli import main as bench_main
    from larr.clients import LarrClient
    from larr.data.schema import load_dataset, write_dataset
    from larr.data.synth import SynthConfig, generate
    from larr.export.repository import RepositoryOptions, write_repository
    from larr.serving.metrics import feature_cache_counters
    from larr.serving.server.process import run_triton_server
    from larr.training.cli import run_all
    from larr.training.config import load_config, parse_overrides

    out = Path(args.out).resolve()
    data_dir, run_dir, repository = out / "data", out / "run", out / "model_repository"
    clock = DemoClock()

    clock.step(1, "data", f"data      -> {data_dir}")
    if not (args.resume and (data_dir / "dataset.json").exists()):
        write_dataset(data_dir, generate(SynthConfig()))
    dataset = load_dataset(data_dir, splits=("train",))

    clock.step(2, "training", f"training  -> {run_dir} (config {args.config})")
    overrides = parse_overrides(args.set)
    config = load_config(args.config, {**overrides, "data": str(data_dir)})
    run_all(config, run_dir, resume=args.resume)
    metrics = json.loads(RunLayout(run_dir).metrics_file.read_text())
    for variant, result in metrics[Stage.CTR.value].items():
        if isinstance(result, dict):
            print(f"      test {variant:<13} AUC {result['auc']:.4f}  logloss {result['logloss']:.4f}  "
                  f"GAUC {result['gauc']:.4f}  (valid AUC {result['best_valid_auc']:.4f})")

    clock.step(3, "export", f"export    -> {repository}")
    write_repository(run_dir, repository, RepositoryOptions(target="cpu"))

    clock.step(4, "serving", "serving   tritonserver on loopback")
    items = list(range(dataset.info.num_items))
    with run_triton_server(repository) as server, LarrClient(server.grpc_url) as client:
        print(f"      gRPC {server.grpc_url}, metrics {server.metrics_url}", flush=True)
        clock.step(5, "querying", f"querying  user {DEMO_USER}, all {len(items)} shops per scene")
        for title, scene in SCENES:
            scores = client.score(scene, DEMO_USER, items)
            clock.answered()
            print(f"\n  {title}")
            print("    " + "; ".join(f"{k}={v!r}" for k, v in scene.items()))
            for item in scores.argsort()[::-1][:TOP]:
                print(f"    {scores[item]:.3f}  {dataset.items.name[item]:<28} ({dataset.items.category[item]})")
        client.score(SCENES[0][1], DEMO_USER, items)  # the first scene again: every feature is now a cache hit
        counters = feature_cache_counters(server.metrics_url)
        print(f"\n  feature cache: {counters}")

    # the short benchmark profile; the published numbers come from `larr bench` (profile full)
    print()
    clock.step(6, "benchmark", f"benchmark -> {out / 'bench'} (larr bench --profile smoke: LARR vs full-text, cache off, FastAPI)")
    status = bench_main(["--profile", "smoke", "--checkpoints", str(run_dir), "--out", str(out / "bench"),
                         "--work", str(out / "bench_work")])
    clock.write(out / TIMINGS_FILE, args, bench_status=status)
    return status


@dataclass
class DemoClock:
    """Each step's wall seconds, printed as the time since the demo started and written to ``OUT/timings.json``
    with the machine, the commit and the load they ran at (how long a demo takes is a result like any other)."""

    started: float = field(default_factory=time.perf_counter)
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    load_average_start: float = field(default_factory=lambda: os.getloadavg()[0])
    step_starts: dict[str, float] = field(default_factory=dict)  # step name -> seconds since start, in order
    first_answer_seconds: float | None = None

    def step(self, number: int, name: str, text: str) -> None:
        elapsed = time.perf_counter() - self.started
        self.step_starts[name] = elapsed
        minutes, seconds = divmod(int(elapsed), 60)
        print(f"[{number}/6] {text}  [{minutes}:{seconds:02d}]", flush=True)

    def answered(self) -> None:
        if self.first_answer_seconds is None:
            self.first_answer_seconds = time.perf_counter() - self.started

    def write(self, path: Path, args: argparse.Namespace, bench_status: int) -> None:
        from larr.benchmarks.machine import detect_machine

        total = time.perf_counter() - self.started
        ends = [*list(self.step_starts.values())[1:], total]
        timings = {
            "command": " ".join(["larr demo", "--config", str(args.config), "--out", str(args.out),
                                 *(["--resume"] if args.resume else []), *(f"--set {kv}" for kv in args.set)]),
            "config": str(args.config),
            "resume": bool(args.resume),
            "code_commit": code_commit(),
            "machine": detect_machine("auto").to_json(),
            "started": self.started_at,
            "load_average_start": round(self.load_average_start, 2),
            "load_average_end": round(os.getloadavg()[0], 2),
            "step_seconds": {name: round(end - start, 1) for (name, start), end in zip(self.step_starts.items(), ends)},
            "first_answer_seconds": None if self.first_answer_seconds is None else round(self.first_answer_seconds, 1),
            "total_seconds": round(total, 1),
            "benchmark_exit_status": bench_status,
        }
        path.write_text(json.dumps(timings, indent=2) + "\n", encoding="utf-8")
        print(f"timings -> {path}", flush=True)
