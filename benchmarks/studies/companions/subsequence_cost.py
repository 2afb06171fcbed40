"""The per-request CPU cost of selecting a user's history sub-sequence (``ctr.history``, larr.data.subsequence).

    python benchmarks/studies/companions/subsequence_cost.py --data DIR                       # DIR has history.csv
    python benchmarks/studies/companions/subsequence_cost.py --data DIR --repeats 10 --requests 2000 --out cost.json

One request = what a server would do once per request (not per candidate): map the request's scene texts to
the context (lexicon), look up its prototype, select the events (:func:`select_events`) and gather their item
ids. The requests are the first ``--requests`` rows of the test split; each repeat times them all in one loop
(``time.perf_counter_ns``) and reports the mean µs per request; the summary is the mean over repeats and its
95 % interval (Student's t). The one-off fit (JS matrix + k-medoids over the history) is timed once beside it.
Every mode is timed, so ``context`` can be read against the trivial ``full`` / ``last_k`` slices.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from larr.benchmarks.summary import mean_ci95
from larr.data.schema import load_dataset
from larr.data.subsequence import ContextPrototypes, HistoryMode, UserEvents, select_events

MODES = (HistoryMode.FULL, HistoryMode.LAST_K, HistoryMode.CONTEXT)


def measure(data: Path, repeats: int, requests: int, length: int, recent: int, prototypes: int) -> dict:
    dataset = load_dataset(data, splits=("test",))
    history = dataset.history
    if history is None:
        raise SystemExit(f"{data}: no history.csv (make one with `larr data synth --history-length 50`)")
    categories = sorted(set(dataset.items.category))
    item_category = np.array([categories.index(c) for c in dataset.items.category])
    start = time.perf_counter_ns()
    fitted = ContextPrototypes.fit(history, item_category, prototypes)
    fit_ms = (time.perf_counter_ns() - start) / 1e6
    events = UserEvents.build(history, fitted, dataset.info.num_users)
    test = dataset.test
    columns = [dataset.info.scene_features.index(f) for f in history.context_features]
    rows = [(int(test.user_id[n]), [test.scene[k][n] for k in columns]) for n in range(min(requests, len(test)))]

    def one_pass(mode: HistoryMode) -> float:
        """Mean µs per request over ``rows``."""
        begin = time.perf_counter_ns()
        for user, texts in rows:
            context = tuple(history.context_value(f, t) for f, t in zip(history.context_features, texts))
            chosen = select_events(events.prototypes[user], fitted.of(context), mode, length, recent)
            events.items[user][chosen]
        return (time.perf_counter_ns() - begin) / 1e3 / len(rows)

    result = {"data": str(data), "requests": len(rows), "repeats": repeats, "history_length": length,
              "history_recent": recent, "prototypes": prototypes, "fit_ms": round(fit_ms, 1),
              "contexts": len(fitted.contexts), "events_per_user": len(history) / dataset.info.num_users,
              "per_request_us": {}}
    for mode in MODES:
        one_pass(mode)  # warm-up
        values = [one_pass(mode) for _ in range(repeats)]
        mean, half = mean_ci95(values)
        # a shared machine's other work lands in whole repeats: the median says what a quiet repeat costs
        result["per_request_us"][mode.value] = {"mean": round(mean, 2), "ci95": round(half, 2),
                                                "median": round(float(np.median(values)), 2),
                                                "repeats": [round(v, 2) for v in values]}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--history-length", type=int, default=50)
    parser.add_argument("--history-recent", type=int, default=10)
    parser.add_argument("--prototypes", type=int, default=4)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    result = measure(args.data, args.repeats, args.requests, args.history_length, args.history_recent, args.prototypes)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
