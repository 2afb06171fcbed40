"""The result tables README and docs/ show, each rendered from committed results files.

:data:`TABLES` maps a table's name — what a ``<!-- render: NAME -->`` marker names (``larr.docs_render``) — to a
function of the repository root that reads the table's results files and returns its markdown. Each function reads
first and then calls a pure ``*_table`` function of the parsed files, so the tables are tested on hand-built
results. Every table ends with a line naming its results files and the commit they ran at: a results file records
``code_commit`` (the commit whose code produced it) or, for a historical result whose run did not record it,
``results_commit`` (the commit that committed it), and a table is not rendered from a file that records neither.
"""

from collections.abc import Callable
from pathlib import Path

from larr.result_tables.frappe import (
    companions_frappe_table,
    finalmlp_id_only_table,
    frappe_deepfm_table,
    frappe_finalmlp_table,
    replication_groups_table,
)
from larr.result_tables.serving import (
    demo_timings_table,
    scale_build_table,
    scale_load_table,
    serving_cpu_sizes_table,
    serving_cpu_table,
    serving_gpu_table,
    soak_table,
)
from larr.result_tables.sources import ResultsError, Source, read_source
from larr.result_tables.synthetic import (
    companions_synthetic_table,
    strict_knowledge_table,
    subsequence_table,
    synthetic_ablation_table,
    synthetic_recall_table,
)

__all__ = ["TABLES", "ResultsError", "Source", "read_source"]

# Results files and folders, relative to the repository root.
FRAPPE = "benchmarks/studies/frappe/results/frappe"
FINALMLP = "benchmarks/studies/frappe/results/frappe-finalmlp"
REPLICATION_SUMMARY = f"{FINALMLP}/replicate-llm-seeds/summary.json"
SYNTHETIC_ABLATION = "benchmarks/results/synth-ablation-tiny"
STRICT_KNOWLEDGE = "benchmarks/studies/synth-strict-knowledge/results"
COMPANIONS = "benchmarks/studies/companions/results"
PRETRAINED_BASE = "benchmarks/studies/pretrained-base/results/results.json"
SERVING_CPU = "benchmarks/results/cpu-2core-amd-epyc/summary.json"
SERVING_CPU_FASTAPI = "benchmarks/results/cpu-2core-amd-epyc-store-warm-inprocess/summary.json"
SERVING_GPU = "benchmarks/results/gpu-nvidia-h200"
SOAK = "benchmarks/results/soak-cpu-2core/soak.json"
DEMO_TIMINGS = "benchmarks/results/demo-cpu-2core-amd-epyc/timings.json"
SCALE = "benchmarks/results/scale-cpu-2core-amd-epyc/results.json"


# --------------------------------------------------------------------------------------------- the registry


def _replication(root: Path) -> str:
    summary = read_source(root, REPLICATION_SUMMARY)
    groups = [read_source(root, f"{FINALMLP}/replicate-llm{g['llm_seed']}/results.json") for g in summary.data["llm_seeds"]]
    return frappe_finalmlp_table(summary, groups)


def _synthetic(root: Path) -> tuple[Source, Source]:
    return read_source(root, f"{SYNTHETIC_ABLATION}/run.json"), read_source(root, f"{SYNTHETIC_ABLATION}/metrics.json")


def _companions_frappe(root: Path) -> str:
    options = [("stage-2 item name ↔ description pairs, weight 1", "item-views"),
               ("distilled embedder, half width", "distilled"), ("stage-1 behaviour records, 10 per user", "behaviour")]
    return companions_frappe_table(read_source(root, f"{FINALMLP}/larr/results.json"),
                                   [(label, read_source(root, f"{FINALMLP}/{folder}/results.json")) for label, folder in options])


TABLES: dict[str, Callable[[Path], str]] = {  # name -> function(repository root) -> markdown
    "frappe-finalmlp": _replication,
    "frappe-finalmlp-groups": lambda root: replication_groups_table(read_source(root, REPLICATION_SUMMARY)),
    "frappe-finalmlp-id-only": lambda root: finalmlp_id_only_table(read_source(root, f"{FINALMLP}/results.json")),
    "frappe-deepfm": lambda root: frappe_deepfm_table(read_source(root, f"{FRAPPE}/results.json"),
                                                      read_source(root, f"{FINALMLP}/results.json")),
    "synthetic-ablation": lambda root: synthetic_ablation_table(*_synthetic(root)),
    "synthetic-ablation-full": lambda root: synthetic_ablation_table(*_synthetic(root), full=True),
    "synthetic-recall": lambda root: synthetic_recall_table(*_synthetic(root)),
    "synthetic-strict-knowledge": lambda root: strict_knowledge_table(
        read_source(root, f"{STRICT_KNOWLEDGE}/default.metrics.json"), read_source(root, f"{STRICT_KNOWLEDGE}/strict.metrics.json")),
    "companion-subsequence": lambda root: subsequence_table(read_source(root, f"{COMPANIONS}/subseq.json")),
    "companions-synthetic": lambda root: companions_synthetic_table(
        read_source(root, f"{COMPANIONS}/views.json"), read_source(root, f"{COMPANIONS}/distill.json"),
        read_source(root, PRETRAINED_BASE), read_source(root, f"{COMPANIONS}/subseq.json")),
    "companions-frappe": _companions_frappe,
    "serving-cpu": lambda root: serving_cpu_table(read_source(root, SERVING_CPU), read_source(root, SERVING_CPU_FASTAPI)),
    "serving-cpu-sizes": lambda root: serving_cpu_sizes_table(read_source(root, SERVING_CPU)),
    "serving-gpu-h200": lambda root: serving_gpu_table(
        read_source(root, f"{SERVING_GPU}/summary.json"), read_source(root, f"{SERVING_GPU}/precompute.json")),
    "soak": lambda root: soak_table(read_source(root, SOAK)),
    "demo-timings": lambda root: demo_timings_table(read_source(root, DEMO_TIMINGS)),
    "scale-build": lambda root: scale_build_table(read_source(root, SCALE)),
    "scale-load": lambda root: scale_load_table(read_source(root, SCALE)),
}
