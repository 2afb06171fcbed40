"""README's load test runs as written: ``larr perf-data`` writes the input file, ``perf_analyzer`` drives a served
``larr`` ensemble with it.

The two command lines are taken from README's fenced code; only the paths (the demo's data and file -> the
session's tiny run and a temporary file) and the gRPC port are swapped. The repository is the tiny run's export.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from larr.benchmarks.perf_install import PerfAnalyzerNotFoundError, find_perf_analyzer, perf_analyzer_env
from larr.contract import ENSEMBLE_NAME

ROOT = Path(__file__).resolve().parents[2]
PERF_DATA, PERF_ANALYZER = "larr perf-data", "perf_analyzer"
README_DATA, README_FILE, README_PORT = "runs/demo/data", "runs/demo/perf_data.json", "8001"


def fenced_commands(markdown: str, prefix: str) -> list[str]:
    """The command lines in ``markdown``'s fenced code blocks that start with ``prefix`` (a line ending in a
    backslash continues on the next), in order, each on one line."""
    commands = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", markdown, flags=re.DOTALL | re.MULTILINE):
        for line in re.sub(r"\s*\\\n\s*", " ", block).splitlines():
            line = line.strip()
            if line == prefix or line.startswith(prefix + " "):
                commands.append(line)
    return commands


def readme_command(prefix: str) -> str:
    (line,) = fenced_commands((ROOT / "README.md").read_text(encoding="utf-8"), prefix)
    return line


def test_fenced_commands_reads_command_lines_of_code_blocks_only():
    markdown = (
        "Run `perf_analyzer -m nothing` inline: not a command line.\n\n"
        "```bash\n"
        "larr perf-data --data runs/demo/data --out runs/demo/perf_data.json\n"
        "perf_analyzer -m larr -u localhost:8001 -i grpc \\\n"
        "    --input-data runs/demo/perf_data.json --concurrency-range 1:4\n"
        "perf_analyzer_helper --not-this\n"
        "```\n"
    )
    assert fenced_commands(markdown, PERF_DATA) == ["larr perf-data --data runs/demo/data --out runs/demo/perf_data.json"]
    assert fenced_commands(markdown, PERF_ANALYZER) == [
        "perf_analyzer -m larr -u localhost:8001 -i grpc --input-data runs/demo/perf_data.json --concurrency-range 1:4"
    ]


def throughputs(output: str) -> dict[int, float]:
    """perf_analyzer's summary, ``Concurrency: 2, throughput: 41.5 infer/sec, latency 48000 usec``, by concurrency."""
    found = re.findall(r"^Concurrency: (\d+), throughput: ([0-9.]+) infer/sec", output, flags=re.MULTILINE)
    return {int(concurrency): float(rate) for concurrency, rate in found}


@pytest.fixture(scope="module")
def server(tiny_run, triton_server_factory, tmp_path_factory):
    from larr.export.repository import RepositoryOptions, write_repository

    repository = tmp_path_factory.mktemp("perf_repository")
    write_repository(tiny_run.run_dir, repository, RepositoryOptions(target="cpu"), progress=lambda line: None)
    return triton_server_factory(repository)


@pytest.mark.integration
def test_readme_perf_analyzer_lines_run_against_a_served_repository(server, tiny_run, tmp_path):
    try:
        perf_analyzer, env = find_perf_analyzer(), perf_analyzer_env()
    except PerfAnalyzerNotFoundError as error:
        pytest.skip(str(error))
    write_line, load_line = readme_command(PERF_DATA), readme_command(PERF_ANALYZER)
    for line, expected in ((write_line, (README_DATA, README_FILE)), (load_line, (README_FILE, f":{README_PORT}"))):
        assert all(text in line for text in expected), f"README's line changed: {line}"
    data_file = tmp_path / "perf_data.json"
    port = server.grpc_url.rsplit(":", 1)[1]

    # `larr` as installed beside this interpreter (the console script), `perf_analyzer` as `larr bench` finds it
    write_argv = shlex.split(write_line.replace(README_DATA, str(tiny_run.data_dir)).replace(README_FILE, str(data_file)))
    written = subprocess.run([str(Path(sys.executable).parent / write_argv[0]), *write_argv[1:]],
                             capture_output=True, text=True, timeout=120, check=False)
    assert written.returncode == 0, written.stdout + written.stderr
    assert data_file.is_file()

    load_argv = shlex.split(load_line.replace(README_FILE, str(data_file)).replace(f":{README_PORT}", f":{port}"))
    loaded = subprocess.run([str(perf_analyzer), *load_argv[1:]], env=env, capture_output=True, text=True,
                            timeout=900, check=False)
    output = loaded.stdout + loaded.stderr
    assert loaded.returncode == 0, output[-4000:]
    # perf_analyzer 2.51 exits 0 even when a level never stabilises: it stops there and reports the levels before
    assert "Failed to obtain stable measurement" not in output, output[-4000:]
    rates = throughputs(loaded.stdout)
    concurrency = re.search(r"--concurrency-range (\d+):(\d+)", load_line)
    assert sorted(rates) == list(range(int(concurrency[1]), int(concurrency[2]) + 1)), output[-4000:]
    assert all(rate > 0 for rate in rates.values()), rates

    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        (stats,) = client.get_inference_statistics(ENSEMBLE_NAME).model_stats
    finally:
        client.close()
    assert stats.inference_stats.fail.count == 0
    assert stats.inference_stats.success.count > 0
