"""The embedder's cost per call, and one two-thread session against two one-thread ones, in-process.

    python benchmarks/results/cpu-2core-amd-epyc-store-queue-delay/ort_threads.py MODEL.onnx --out ort_threads.json

MODEL.onnx: the bench's SmolLM-135M-shape embedder (WORK/smollm-135m/repos/larr/embedder/1/model.onnx). Texts of
12 tokens; each point is timed REPEATS times for SECONDS, the configurations interleaved per repeat; reported as
tokens/s mean and 95 % t-interval over repeats. "pair": two processes of one thread each, each running batches
of B/2 at the same time (their tokens/s summed), against one two-thread session on batches of B.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np

TOKENS = 12
SECONDS = 2.0
REPEATS = 5
T975 = {4: 2.776}  # Student t, 97.5 %, REPEATS - 1 degrees of freedom


def session(model: str, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the served embedder
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def tokens_per_s(sess, batch: int, seconds: float) -> float:
    ids = np.random.default_rng(0).integers(10, 1000, (batch, TOKENS)).astype(np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    sess.run(None, feed)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sess.run(None, feed)
        calls += 1
    return batch * TOKENS * calls / (time.perf_counter() - start)


def worker(model: str, batch: int) -> None:
    """One one-thread process of a pair: waits for a line, then prints its tokens/s."""
    sess = session(model, 1)
    print("ready", flush=True)
    sys.stdin.readline()
    print(tokens_per_s(sess, batch, SECONDS), flush=True)


def pair(model: str, batch: int) -> float:
    procs = [subprocess.Popen([sys.executable, __file__, model, "--worker", str(batch)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    for proc in procs:  # both start within a millisecond of each other
        proc.stdin.write("\n")
        proc.stdin.flush()
    return sum(float(proc.communicate()[0]) for proc in procs)


def interval(values: list[float]) -> dict:
    mean = statistics.mean(values)
    return {"mean": mean, "ci95": T975[len(values) - 1] * statistics.stdev(values) / len(values) ** 0.5, "values": values}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--worker", type=int)
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.worker:
        return worker(args.model, args.worker)
    two = session(args.model, 2)
    points: dict[str, list[float]] = {}
    for _ in range(REPEATS):
        for batch in (1, 4, 8, 64):
            points.setdefault(f"two_threads_b{batch}", []).append(tokens_per_s(two, batch, SECONDS))
        for batch in (8, 16):
            points.setdefault(f"pair_b{batch}", []).append(pair(args.model, batch // 2))
    result = {"tokens_per_text": TOKENS, "seconds": SECONDS, "repeats": REPEATS,
              "tokens_per_s": {name: interval(values) for name, values in points.items()}}
    for name, row in result["tokens_per_s"].items():
        print(f"{name:18s} {row['mean']:7.0f} ± {row['ci95']:5.0f} tokens/s  "
              f"({1e3 * int(name.rsplit('b', 1)[1]) * TOKENS / row['mean']:.1f} ms per call of the batch)")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
