"""Reading a Triton model config as the python backend hands it over (``json.loads(args["model_config"])``).

Torch-free and import-free, so that the request checks (larr.serving.ctr_request, .embedder_batch) can read
their limits from the config on the torch-free serving path (pyproject's import-linter contracts).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from larr.contract import PARAM_PROCESS_NICE

log = logging.getLogger(__name__)


def model_parameters(config: Mapping[str, Any]) -> dict[str, str]:
    """``parameters`` of a model config as parsed from ``args["model_config"]`` JSON: name -> string."""
    return {name: value["string_value"] for name, value in config.get("parameters", {}).items()}


LOWEST_NICE = 19  # Linux's lowest priority; a stub that reaches it also takes the SCHED_IDLE policy


def apply_process_nice(params: Mapping[str, str]) -> int:
    """Lower this (stub) process's OS priority by the ``process_nice`` parameter, if any; returns the niceness
    now. Call it before the runtime starts its threads: on Linux both settings are per thread, and threads
    inherit them from the thread that creates them.

    At niceness 19 the thread also takes ``SCHED_IDLE``: it runs only when no other thread wants the core.
    Niceness alone still leaves a background embedder ~1.5 % of a core against the request path, and a slice
    after each of its wake-ups; an idle-policy thread is preempted at once. Where the policy is refused
    (e.g. a seccomp profile), niceness 19 stays and a warning says so.
    """
    increment = int(params.get(PARAM_PROCESS_NICE, 0))
    if increment < 0:
        raise ValueError(f"{PARAM_PROCESS_NICE} must be >= 0 (a model may lower its priority, not raise it)")
    niceness = os.nice(increment)
    if increment and niceness >= LOWEST_NICE:
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except (OSError, AttributeError) as error:  # AttributeError: not Linux
            log.warning("process_nice %d: SCHED_IDLE refused (%s); running at niceness %d", increment, error, niceness)
    return niceness


def tensor_names(config: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(input names, output names), in config order."""
    return tuple(t["name"] for t in config["input"]), tuple(t["name"] for t in config["output"])
