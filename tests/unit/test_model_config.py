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
print(before, after, os.nice(0))
"""


@pytest.mark.parametrize("value, increment", [("7", 7), ("0", 0), (None, 0)])
def test_the_parameter_is_added_to_the_process_niceness(value, increment):
    argv = [sys.executable, "-c", PROBE] + ([PARAM_PROCESS_NICE, value] if value is not None else [])
    before, after, now = map(int, subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split())
    assert after == now == min(before + increment, 19)


def test_a_model_may_not_raise_its_priority():
    with pytest.raises(ValueError, match=PARAM_PROCESS_NICE):
        apply_process_nice({PARAM_PROCESS_NICE: "-5"})
