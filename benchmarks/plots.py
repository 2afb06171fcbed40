"""The three figures of the report, drawn from results.json / summary.json with matplotlib (Agg, no display).

* ``throughput_vs_p99.png``: per LLM size, requests/s against p99 latency along the concurrency sweep
  of every Triton variant (perf_analyzer), and the FastAPI / Triton points of the Python generator.
* ``speedup_vs_llm_size.png``: LARR's speed-up over the full-text baseline and over cache-off, next to
  the token bound, against the LLM's parameter count.
* ``cache_hit_rate_vs_unseen.png``: the measured feature-cache hit rate against the share of
  never-seen texts, with the ceiling ``1 - share`` (every seen text already cached).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from larr.benchmarks.config import CACHE_OFF, FASTAPI, FULLTEXT, LARR, LARR_LOADGEN

THROUGHPUT_PLOT = "throughput_vs_p99.png"
SPEEDUP_PLOT = "speedup_vs_llm_size.png"
HIT_RATE_PLOT = "cache_hit_rate_vs_unseen.png"
_STYLE = {
    LARR: "tab:blue", CACHE_OFF: "tab:orange", FULLTEXT: "tab:red", FASTAPI: "tab:purple", LARR_LOADGEN: "tab:cyan",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    return plt


def _log_axes(ax) -> None:
    """Log-log axes labelled with plain numbers at the major ticks only (minor labels overlap)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda value, _: f"{value:g}")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(NullFormatter())


def plot_all(results: dict, summary: dict, directory: Path) -> list[str]:
    """Write the three PNGs into ``directory``; returns their file names."""
    directory = Path(directory)
    return [
        plot_throughput_vs_p99(results, directory / THROUGHPUT_PLOT),
        plot_speedup(summary, directory / SPEEDUP_PLOT),
        plot_hit_rate(summary, directory / HIT_RATE_PLOT),
    ]


def plot_throughput_vs_p99(results: dict, path: Path) -> str:
    plt = _pyplot()
    sizes = results["sizes"]
    figure, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 4.5), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        series: dict[tuple[str, str, float], list[dict]] = defaultdict(list)
        for point in size["points"]:
            if point["method"] in ("perf_analyzer", "loadgen") and point["p99_us"]:
                series[(point["variant"], point["method"], point["unseen_share"])].append(point)
        for (variant, method, share), points in sorted(series.items()):
            points.sort(key=lambda p: p["concurrency"])
            x = [p["p99_us"] / 1e3 for p in points]
            y = [p["throughput"] for p in points]
            dashed = variant == LARR and share != results["config"]["headline_unseen"]
            label = f"{variant} ({share:.0%} unseen)" if variant == LARR else variant
            if method == "loadgen":
                label += " [python generator]"
            linestyle = ":" if method == "loadgen" else ("--" if dashed else "-")
            ax.plot(x, y, marker="s" if method == "loadgen" else "o", linestyle=linestyle, color=_STYLE.get(variant),
                    alpha=0.5 if dashed else 1.0, label=label)
            for p, xi, yi in zip(points, x, y):
                ax.annotate(str(p["concurrency"]), (xi, yi), textcoords="offset points", xytext=(3, 3), fontsize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _log_axes(ax)
        ax.set_xlabel("p99 latency (ms)")
        ax.set_ylabel("throughput (requests/s)")
        ax.set_title(f"{size['llm_size']}\n{size['label']}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    figure.suptitle(f"{results['machine']['name']}: throughput vs p99 (labels: concurrency)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path.name


def plot_speedup(summary: dict, path: Path) -> str:
    plt = _pyplot()
    rows = sorted(summary["by_llm_size"].items(), key=lambda item: item[1]["parameters"])
    params = [row["parameters"] / 1e6 for _, row in rows]
    figure, ax = plt.subplots(figsize=(6.5, 4.5))
    for key, label, style in (
        ("throughput_ratio_vs_fulltext", "LARR / full-text (measured)", "o-"),
        ("token_bound_vs_fulltext", "token bound vs full-text", "k--"),
        ("throughput_ratio_vs_cache_off", "LARR / cache off (measured)", "s-"),
        ("throughput_ratio_vs_fastapi", "Triton / FastAPI (python generator)", "^-"),
    ):
        values = [(p, row[key]) for p, (_, row) in zip(params, rows) if row.get(key) is not None]
        if values:
            ax.plot([v[0] for v in values], [v[1] for v in values], style, label=label)
    for p, (size, _) in zip(params, rows):
        ax.annotate(size, (p, 1.0), textcoords="offset points", xytext=(0, -12), fontsize=7, ha="center")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    _log_axes(ax)
    ax.set_xlabel("LLM parameters (millions)")
    ax.set_ylabel("speed-up (requests/s ratio)")
    head = summary["headline"]
    title = f"speed-up vs LLM size (concurrency {head['concurrency']}, {head['unseen_share']:.0%} unseen)"
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path.name


def plot_hit_rate(summary: dict, path: Path) -> str:
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(6.0, 4.5))
    shares_seen: set[float] = set()
    for size, by_share in summary["cache_hit_rate_by_unseen_share"].items():
        points = sorted((float(s), rate) for s, rate in by_share.items() if rate is not None)
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=size)
            shares_seen.update(p[0] for p in points)
    long_run = sorted((float(s), v["hit_rate"]) for s, v in summary.get("long_run", {}).items())
    if long_run:
        requests = next(iter(summary["long_run"].values()))["after_requests"]
        ax.plot([p[0] for p in long_run], [p[1] for p in long_run], "s--", color="grey",
                label=f"long-running server (simulated, after {requests:,} requests)")
        shares_seen.update(p[0] for p in long_run)
    if shares_seen:
        grid = sorted(shares_seen)
        ax.plot(grid, [1 - s for s in grid], "k:", linewidth=0.8, label="ceiling: 1 - unseen share")
    ax.set_xlabel("share of never-seen scene texts")
    ax.set_ylabel("feature-cache hit rate")
    ax.set_ylim(0, 1.02)
    ax.set_title(
        f"feature-cache hit rate vs unseen share (measured at concurrency {summary['headline']['concurrency']};\n"
        "it grows with the requests a server has seen: see requests_before in summary.json)", fontsize=9,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path.name
