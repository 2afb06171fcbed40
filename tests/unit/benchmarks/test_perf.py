"""perf_analyzer command and report parsing, Triton statistics deltas (no server, no perf_analyzer run)."""

from __future__ import annotations

import pytest

from larr.benchmarks.perf import (
    WINDOWS,
    ModelStats,
    PerfAnalyzerError,
    data_requests,
    parse_perf_csv,
    parse_statistics,
    perf_analyzer_command,
    statistics_delta,
)

# Written by perf_analyzer 2.51 (-f report.csv --verbose-csv) against the larr ensemble.
VERBOSE_CSV = (
    "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,"
    "Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,"
    "Avg latency,request/response,response wait\n"
    "16,131.812,5,97389,11,39,8469,517,2,106337,138939,152429,176876,106435,7,106406\n"
)
PLAIN_CSV = (
    "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,"
    "Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency\n"
    "16,198.717,12,73476,1,31,6114,370,10,78475,125486,139352,200944\n"
)


def test_parse_verbose_report():
    (row,) = parse_perf_csv(VERBOSE_CSV)
    assert row.concurrency == 16
    assert row.throughput == pytest.approx(131.812)
    assert (row.p50_us, row.p90_us, row.p95_us, row.p99_us) == (106337, 138939, 152429, 176876)
    assert row.avg_latency_us == 106435
    assert row.server_compute_infer_us == 8469 and row.network_us == 97389


def test_parse_plain_report_and_extra_rows():
    text = PLAIN_CSV + "\n" + PLAIN_CSV.splitlines()[1].replace("16,", "32,", 1) + "\n"
    rows = parse_perf_csv(text)
    assert [r.concurrency for r in rows] == [16, 32]
    assert rows[0].avg_latency_us is None  # not in a plain report
    assert rows[0].p99_us == 200944


def test_unreadable_reports():
    with pytest.raises(PerfAnalyzerError, match="p99 latency"):
        parse_perf_csv("Concurrency,Inferences/Second,p50 latency\n1,2,3\n")
    with pytest.raises(PerfAnalyzerError, match="no measurement rows"):
        parse_perf_csv(PLAIN_CSV.splitlines()[0] + "\n")


def test_command():
    command = perf_analyzer_command("/bin/pa", "larr", "127.0.0.1:8001", "d.json", 16, 200, "out.csv")
    flags = dict(zip(command[1::2], command[2::2]))
    assert command[0] == "/bin/pa"
    assert flags["-m"] == "larr" and flags["-i"] == "grpc" and flags["-u"] == "127.0.0.1:8001"
    assert flags["--input-data"] == "d.json" and flags["--concurrency-range"] == "16"
    assert flags["--measurement-mode"] == "count_windows" and flags["--measurement-request-count"] == "200"
    assert flags["--max-trials"] == str(WINDOWS) and flags["--max-threads"] == "16"
    assert "--request-count" not in command  # it hangs at exit with this perf_analyzer build
    with pytest.raises(ValueError):
        perf_analyzer_command("/bin/pa", "larr", "u", "d.json", 0, 200, "out.csv")
    with pytest.raises(ValueError):
        perf_analyzer_command("/bin/pa", "larr", "u", "d.json", 4, 0, "out.csv")


def test_data_files_hold_more_than_perf_analyzer_sends():
    assert data_requests(100, 16, rate=10.0) >= 2 * WINDOWS * 100 + 16
    # windows last at least about a second: a fast server needs a file sized by its rate, not the window
    assert data_requests(10, 1, rate=5000.0) >= WINDOWS * 5000


STATS_BEFORE = {
    "model_stats": [
        {"name": "larr", "version": "1", "inference_count": "10", "execution_count": "10",
         "inference_stats": {"success": {"count": "10", "ns": "1000"}, "queue": {"count": "10", "ns": "5000"},
                             "compute_infer": {"count": "10", "ns": "20000"}}},
        {"name": "embedder", "version": "1", "inference_count": "8", "execution_count": "4",
         "inference_stats": {"success": {"count": "4", "ns": "1"}, "compute_infer": {"count": "4", "ns": "4000"}}},
        {"name": "ctr", "version": "1"},
    ]
}
STATS_AFTER = {
    "model_stats": [
        {"name": "larr", "version": "1", "inference_count": "30", "execution_count": "30",
         "inference_stats": {"success": {"count": "30", "ns": "3000"}, "queue": {"count": "30", "ns": "45000"},
                             "compute_infer": {"count": "30", "ns": "60000"}}},
        {"name": "embedder", "version": "1", "inference_count": "38", "execution_count": "9",
         "inference_stats": {"success": {"count": "9", "ns": "1"}, "compute_infer": {"count": "9", "ns": "14000"}}},
        {"name": "ctr", "version": "1"},
    ]
}


def test_statistics_delta():
    before, after = parse_statistics(STATS_BEFORE), parse_statistics(STATS_AFTER)
    assert before["ctr"] == ModelStats(0, 0, 0, 0, 0, 0, 0)
    delta = statistics_delta(before, after)
    assert set(delta) == {"larr", "embedder"}  # a model without requests is left out
    assert delta["larr"]["requests"] == 20
    assert delta["larr"]["queue_us"] == pytest.approx(40000 / 20 / 1e3)
    assert delta["larr"]["compute_infer_us"] == pytest.approx(40000 / 20 / 1e3)
    assert delta["embedder"]["executions"] == 5
    assert delta["embedder"]["avg_batch"] == pytest.approx(30 / 5)


def test_statistics_of_a_model_that_appears_later():
    delta = statistics_delta({}, parse_statistics(STATS_AFTER))
    assert delta["larr"]["requests"] == 30
