"""Switch an exported repository's answer to fresh scene texts (``strict`` / ``async`` / ``deadline``) without exporting it again:
a serving-time choice, which the benchmarks flip between runs.

    apply_fresh_text_policy(Path("runs/demo/run/model_repository"), "async")
"""

from __future__ import annotations

import shutil
from pathlib import Path

from larr.contract import EMBEDDER_BACKGROUND_MODEL, EMBEDDER_MODEL, FEATURE_CACHE_MODEL
from larr.export.files import link_or_copy, read_config, rewrite_config
from larr.export.model_configs import background_embedder_config, has_background_embedder, with_fresh_text_policy
from larr.export.options import BACKGROUND_NICE, CONFIG_FILE
from larr.serving.fresh_text import FreshTextPolicy


def apply_fresh_text_policy(
    repository: Path, policy: FreshTextPolicy | str, report=None, busy_share: float | None = None,
    miss_deadline_ms: float | None = None,
) -> None:
    """Make an exported repository answer fresh texts by ``policy``: a serving-time choice, so a repository can
    be switched without exporting it again (the benchmarks do).

    ``async`` on a python-backend embedder adds ``embedder_background``: the embedder's version folder
    hard-linked, one instance, ``process_nice`` :data:`BACKGROUND_NICE`; the feature_cache sends its background
    BLS calls there, so embedding fresh texts takes a core only when the request path leaves one idle (on two
    cores, a background batch at normal priority halved the CPU of every request behind it). ``strict``
    removes it. A TensorRT embedder (gpu target) has no stub process to renice: the embedder itself is used.
    ``busy_share`` and ``miss_deadline_ms``, when given, replace the feature_cache's ``background_busy_share`` and
    ``miss_deadline_ms``.
    """
    policy = FreshTextPolicy.parse(policy)
    if busy_share is not None and not 0.0 < busy_share <= 1.0:
        raise ValueError(f"background busy share must be in (0, 1], got {busy_share}")
    if miss_deadline_ms is not None and not 0.0 <= miss_deadline_ms < float("inf"):
        raise ValueError(f"miss deadline must be a finite number of ms >= 0, got {miss_deadline_ms}")
    repository = Path(repository)
    background_dir = repository / EMBEDDER_BACKGROUND_MODEL
    if background_dir.exists():
        shutil.rmtree(background_dir)
    embedder = read_config(repository / EMBEDDER_MODEL / CONFIG_FILE)
    background = has_background_embedder(policy, embedder)
    if background:
        shutil.copytree(repository / EMBEDDER_MODEL, background_dir, copy_function=link_or_copy)
        rewrite_config(background_dir / CONFIG_FILE, background_embedder_config(embedder))
    feature_cache_file = repository / FEATURE_CACHE_MODEL / CONFIG_FILE
    rewrite_config(feature_cache_file, with_fresh_text_policy(read_config(feature_cache_file), policy, background, busy_share,
                                                              miss_deadline_ms))
    if report is not None and background:
        report(f"{EMBEDDER_BACKGROUND_MODEL}: {background_dir} (the embedder's files, niceness {BACKGROUND_NICE})")


__all__ = ["apply_fresh_text_policy"]
