"""README's raw ``tritonclient`` query (step 5, "Query") runs as written against a served ``larr`` ensemble.

The toy ensemble (tests/integration/conftest.py) has the real contract, so the example's reading of the published
``scene_features`` and of ``max_batch_size`` is what a real repository needs; only the URL is swapped."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README_URL = "127.0.0.1:8001"


def raw_tritonclient_example() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### 5. Query", 1)[1].split("\n### ", 1)[0]
    (code,) = [block for block in re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
               if "import tritonclient.grpc" in block]
    return code


@pytest.mark.integration
def test_the_raw_tritonclient_example_scores_the_requested_items(toy_larr_server, toy):
    code = raw_tritonclient_example()
    assert README_URL in code
    result = subprocess.run(
        [sys.executable, "-c", code.replace(README_URL, toy_larr_server.grpc_url)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    printed = [float(value) for value in re.findall(r"[0-9]*\.[0-9]+", result.stdout)]
    scene = {"time_slot": "lunch time", "weather": "downpour"}  # the README's texts of the toy's two features
    expected = toy.ctr([scene[name] for name in toy.scene_features], 7, [1, 2, 3])
    assert printed == pytest.approx(expected, abs=1e-6)
