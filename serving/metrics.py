"""Reading the server's Prometheus metrics (what the demo and the benchmarks report about the cache)."""

from __future__ import annotations

import re
import urllib.request


def feature_cache_counters(metrics_url: str) -> dict[str, float]:
    """The feature cache's series from Triton's Prometheus metrics endpoint, summed over instances.

    The per-tier gauges (``tier_*``, one series per tier) are left out: ``entries``/``bytes`` already sum them.
    """
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    counters: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"larr_feature_cache_(\w+)\{[^}]*\} ([0-9.e+]+)", line)
        if match and not match.group(1).startswith("tier_"):
            counters[match.group(1)] = counters.get(match.group(1), 0.0) + float(match.group(2))
    return counters
