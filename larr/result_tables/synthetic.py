"""The synthetic-data tables: the ablation of the tiny config, the stage-2 recall, the strict-knowledge world and the
companion methods on the synthetic world."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from larr.result_tables.sources import ResultsError, Source, ahead, mean_sd, signed, source_line, table

ABLATION_ORDER = ("larr", "id_only", "no_stage1", "no_stage2", "no_alignment", "full_text")


# --------------------------------------------------------------------------------------------- synthetic data


def synthetic_ablation_table(run: Source, metrics: Source, full: bool = False) -> str:
    """Stage 3's variants on the synthetic test split, one seed: LARR, the ID-only baseline and the ablations
    (``full``: with logloss, GAUC and the best validation AUC)."""
    ctr = {name: result for name, result in metrics.data["ctr"].items() if isinstance(result, dict)}
    if "id_only" not in ctr:
        raise ResultsError(f"{metrics.path}: no id_only variant to measure the others against")
    names = [n for n in ABLATION_ORDER if n in ctr] + sorted(n for n in ctr if n not in ABLATION_ORDER)
    baseline = ctr["id_only"]["auc"]

    def delta(name: str) -> str:
        text = "0" if name == "id_only" else signed(ctr[name]["auc"] - baseline)
        return f"**{text}**" if name == "larr" else text

    header, align = ["variant", "test AUC", "Δ AUC vs `id_only`"], ["---", "---:", "---:"]
    rows = [[f"`{n}`", f"{ctr[n]['auc']:.4f}", delta(n)] for n in names]
    if full:
        header, align = header + ["logloss", "GAUC", "valid AUC"], align + ["---:"] * 3
        for row, n in zip(rows, names):
            row += [f"{ctr[n]['logloss']:.4f}", f"{ctr[n]['gauc']:.4f}", f"{ctr[n]['best_valid_auc']:.4f}"]
    return "\n".join([*table(header, align, rows), "", source_line(metrics, run, note=_run_note(run))])


def synthetic_recall_table(run: Source, metrics: Source) -> str:
    """Retrieval after stages 1 and 2: recall@10 per pair kind of the stage-1 LM, the stage-2 embedder and the
    embedder stage 2 trains from the LM before stage 1 (the ``no_stage1`` ablation's)."""
    recall = metrics.data["embed"]["recall@10"]
    models = [("stage-1 LM, same last-token pooling", "stage1"), ("stage-2 embedder", "stage2"),
              ("stage 2 started without stage 1", "no_stage1")]
    kinds = [("user–user", "user_user"), ("item–item", "item_item"), ("user–item", "user_item")]
    rows = [[label, *(f"{recall[key][kind]:.3f}" for _, kind in kinds)] for label, key in models if key in recall]
    lines = table(["recall@10", *(label for label, _ in kinds)], ["---", "---:", "---:", "---:"], rows)
    return "\n".join([*lines, "", source_line(metrics, run, note=_run_note(run))])


def _run_note(run: Source) -> str:
    setup = run.data
    return f" (`{setup['command']}`, seed {setup['seed']}, {setup['machine']['name']})"


def strict_knowledge_table(default: Source, strict: Source) -> str:
    """Default against ``--strict-knowledge`` data, one quick-settings run each: LARR, ID-only and their gap."""
    rows = []
    for label, metrics in (("default `knowledge.txt` (held-out paraphrases glossed)", default),
                           ("`--strict-knowledge` (no held-out text glossed)", strict)):
        larr, id_only = metrics.data["ctr"]["larr"], metrics.data["ctr"]["id_only"]
        rows.append([label, f"{larr['auc']:.4f}", f"{id_only['auc']:.4f}", signed(larr["auc"] - id_only["auc"]),
                     f"{larr['logloss']:.4f}"])
    lines = table(["data (quick settings, one seed)", "LARR test AUC", "ID-only test AUC", "LARR − ID-only",
                    "LARR logloss"], ["---", "---:", "---:", "---:", "---:"], rows)
    return "\n".join([*lines, "", source_line(default, strict)])


# --------------------------------------------------------------------------------------------- companion methods


def subsequence_table(subseq: Source) -> str:
    """Context sub-sequence selection on the long-history world: each ``ctr.history`` mode's test AUC for LARR and
    ID-only, and its paired Δ over history off (per seed)."""
    data = subseq.data
    settings, events = data["settings"], data["mean_events_read"]
    modes = [
        ("off", "`off`", "0"),
        ("full", "`full` (target attention)", f"{events['full']:.0f}"),
        ("last_k", f"`last_k` (k = {settings['ctr.history_recent']})", f"{events['last_k']:.0f}"),
        ("context", f"`context` ({settings['ctr.prototypes']} prototypes + last {settings['ctr.history_recent']})",
         f"{events['context']:.0f} on average"),
        ("context_shuffled", "control: `context`, another user's events", f"{events['context']:.0f} on average"),
    ]

    def cells(variant: str, mode: str) -> list[str]:
        row = data["rows"][f"{variant}/{mode}"]
        deltas = row["auc_delta_vs_history_off"]
        if not deltas:
            return [mean_sd(row["test_auc"]), ""]
        per_seed = ", ".join(signed(deltas[str(seed)], 3) for seed in data["seeds"])
        return [mean_sd(row["test_auc"]), f"{signed(row['auc_delta_vs_history_off_stats']['mean'])} ± "
                f"{row['auc_delta_vs_history_off_stats']['std']:.4f} ({per_seed})"]

    rows = [[label, read, *cells("larr", mode), *cells("id_only", mode)] for mode, label, read in modes]
    lines = table(["`ctr.history`", "events read", "LARR test AUC", "Δ vs off (per seed)", "ID-only test AUC",
                    "Δ vs off (per seed)"], ["---", "---", "---:", "---", "---:", "---"], rows)
    return "\n".join([*lines, "", source_line(subseq)])


def companions_synthetic_table(views: Source, distill: Source, pretrained: Source, subseq: Source) -> str:
    """Every companion option on the synthetic data, quick profile: LARR's test AUC and its paired Δ over the
    baseline ``larr`` run of the same seed (the sub-sequence rows over history off on the long-history data)."""

    def row(label: str, auc: dict, deltas: Sequence[float] | None, delta_stats: dict | None = None) -> list[str]:
        if deltas is None:
            return [label, mean_sd(auc), "–"]
        stats = delta_stats or {"mean": statistics.fmean(deltas), "std": statistics.stdev(deltas)}
        return [label, mean_sd(auc), f"{signed(stats['mean'])} ± {stats['std']:.4f} ({ahead(deltas)})"]

    base = pretrained.data["test_auc_rows"]
    baseline = base["baseline_larr (tiny from-scratch Llama)"]["test_auc_summary"]
    rows = [row("baseline `larr` (default data)", baseline, None)]
    labels = {"behaviour": "stage-1 behaviour records, 10 per user", "item_views": "stage-2 item name ↔ description pairs, weight 1",
              "persona": "stage-2 explicit-persona pairs, weight 1"}
    for name, option in views.data["options"].items():
        deltas = [seed["delta_auc"] for seed in option["seeds"].values()]
        rows.append(row(labels.get(name, name), option["summary"]["auc"], deltas, option["summary"]["delta_auc"]))
    distilled = [seed["auc_delta_vs_baseline_larr"] for seed in distill.data["seeds"].values()]
    rows.append(row("distilled embedder, half width", distill.data["summary"]["auc_distilled_larr"], distilled,
                    distill.data["summary"]["auc_delta_paired"]))
    minilm = next(r for name, r in base.items() if name.startswith("a_larr_minilm"))
    rows.append(row("pretrained MiniLM base (stages 1/2 shortened)", minilm["test_auc_summary"],
                    list(minilm["paired_delta_vs_baseline_larr"].values()), minilm["paired_delta_summary"]))
    for mode, label in (("off", "history off (long-history data)"), ("full", "full history, target attention"),
                        ("last_k", "last 10 events, target attention"), ("context", "**context sub-sequence**")):
        history = subseq.data["rows"][f"larr/{mode}"]
        deltas = history["auc_delta_vs_history_off"]
        rows.append(row(label, history["test_auc"], list(deltas.values()) if deltas else None,
                        history["auc_delta_vs_history_off_stats"]))
    lines = table(["option (data)", "test AUC", "paired Δ vs baseline (seeds ahead)"], ["---", "---:", "---:"], rows)
    return "\n".join([*lines, "", source_line(views, distill, pretrained, subseq)])

