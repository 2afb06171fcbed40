"""larr.serving.model_config: the process_nice parameter lowers a stub's OS priority, and only lowers it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from larr.contract import PARAM_PROCESS_NICE
from larr.serving.model_config import apply_process_nice

PROBE = """
import os, sys
from larr.serving.model_config import apply_process_nice
before = os.nice(0)
after = apply_process_nice({sys.argv[1]: sys.argv[2]} if len(sys.argv) > 2 else {})
print(before, after, os.nice(0), int(os.sched_getscheduler(0) == os.SCHED_IDLE))
"""


@pytest.mark.parametrize("value, increment", [("7", 7), ("0", 0), (None, 0), ("19", 19)])
def test_the_parameter_is_added_to_the_process_niceness(value, increment):
    argv = [sys.executable, "-c", PROBE] + ([PARAM_PROCESS_NICE, value] if value is not None else [])
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    before, after, now, idle = map(int, out.split())
    assert after == now == min(before + increment, 19)
    assert idle == (now == 19 and increment > 0)  # the lowest niceness also takes the SCHED_IDLE policy


def test_threads_started_after_it_inherit_the_idle_policy():
    probe = PROBE.replace("print(", "import threading\nseen = []\nt = threading.Thread(target=lambda: seen.append("
                          "os.sched_getscheduler(0) == os.SCHED_IDLE)); t.start(); t.join()\nprint(int(seen[0]), ")
    out = subprocess.run([sys.executable, "-c", probe, PARAM_PROCESS_NICE, "19"], capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "1"  # ONNX Runtime's pool threads, created after initialize, run idle too


def test_a_model_may_not_raise_its_priority():
    with pytest.raises(ValueError, match=PARAM_PROCESS_NICE):
        apply_process_nice({PARAM_PROCESS_NICE: "-5"})
