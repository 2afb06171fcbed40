"""frappe_llm_seeds: the two-level interval counts the stages-1/2 seeds, checked by hand."""

from __future__ import annotations

import json

import pytest
from frappe_llm_seeds import main, read_id_only, read_llm_seed, read_llm_seeds, summarise


def write_results(path, llm_seed: int, larr: dict[int, float], id_only: dict[int, float], config=None):
    per_seed = {"larr": {str(s): {"auc": a} for s, a in larr.items()},
                "id_only": {str(s): {"auc": a} for s, a in id_only.items()}}
    setup = {"llm_seed": llm_seed, "config": config or {"ctr": {"align_weight": 0.1}}}
    path.write_text(json.dumps({"per_seed": per_seed, "setup": setup}))
    return path


def three_llm_seeds(tmp_path):
    # ID-only 0.9850 on both stage-3 seeds; LARR gaps per LLM seed: (+0.0005, +0.0015) -> mean +0.001,
    # (+0.002, +0.002) -> +0.002, (+0.003, +0.003) -> +0.003 (seed 2023 unpaired in the last file: ignored)
    base = {2021: 0.9850, 2022: 0.9850}
    return [
        write_results(tmp_path / "a.json", 2024, {2021: 0.9855, 2022: 0.9865}, base),
        write_results(tmp_path / "b.json", 2025, {2021: 0.9870, 2022: 0.9870}, base),
        write_results(tmp_path / "c.json", 2026, {2021: 0.9880, 2022: 0.9880, 2023: 0.9990}, base),
    ]


def test_interval_is_over_the_per_llm_seed_means(tmp_path):
    summary = summarise([read_llm_seed(p) for p in three_llm_seeds(tmp_path)], target=0.9861)
    # by hand: means 0.001, 0.002, 0.003 -> mean 0.002, sample std 0.001, t(0.975, 2) = 4.303 -> 0.002484
    assert summary.gap_mean == pytest.approx(0.002)
    assert summary.gap_ci95 == pytest.approx(4.303 * 0.001 / 3**0.5, rel=1e-3)
    # the six LARR runs: 0.9855, 0.9865, 0.9870, 0.9870, 0.9880, 0.9880 -> mean 0.98700
    assert summary.larr_mean == pytest.approx(0.98700)
    assert not summary.goal_met  # the mean is above 0.9861, but the interval [-0.0005, +0.0045] holds 0


def test_rows_follow_the_stages_1_2_seed_whatever_the_file_order(tmp_path):
    files = three_llm_seeds(tmp_path)
    summary = summarise([read_llm_seed(p) for p in reversed(files)])
    assert [g.llm_seed for g in summary.llm_seeds] == [2024, 2025, 2026]


def test_goal_needs_the_mean_above_the_board_and_the_counted_interval_above_zero(tmp_path):
    base = {2021: 0.9850}
    files = [write_results(tmp_path / f"{s}.json", s, {2021: 0.9850 + gap}, base)
             for s, gap in ((2024, 0.0019), (2025, 0.0020), (2026, 0.0021))]
    groups = [read_llm_seed(p) for p in files]
    # gaps 0.0019, 0.0020, 0.0021: std 0.0001, half-width 4.303 * 0.0001 / sqrt(3) = 0.000248 > 0 from 0.0020
    assert summarise(groups, target=0.9861).goal_met  # LARR mean 0.9870
    assert not summarise(groups, target=0.9875).goal_met  # ... but not above a higher board

def test_one_llm_seed_gives_no_counted_interval(tmp_path):
    first = three_llm_seeds(tmp_path)[0]
    summary = summarise([read_llm_seed(first)], target=0.9861)
    assert summary.gap_ci95 is None and not summary.goal_met  # whatever the stage-3 interval says
    assert summary.stage3_only_ci95 == pytest.approx(12.706 * 0.000707107 / 2**0.5, rel=1e-3)


def test_one_llm_seeds_runs_split_over_two_files_merge_into_one_row(tmp_path):
    files = three_llm_seeds(tmp_path)
    # stages-1/2 seed 2024's stage-3 seed 2023 finished from another run folder: one row, three paired runs
    extra = write_results(tmp_path / "a-2023.json", 2024, {2023: 0.9860}, {2023: 0.9852})
    groups = {g.llm_seed: g for g in read_llm_seeds([files[0], extra, *files[1:]])}
    assert sorted(groups) == [2024, 2025, 2026]
    assert groups[2024].stage3_seeds == [2021, 2022, 2023]
    assert groups[2024].gaps == pytest.approx([0.0005, 0.0015, 0.0008])
    summary = summarise(list(groups.values()))
    # per-LLM-seed means 0.0028 / 3, 0.002, 0.003
    assert summary.gap_mean == pytest.approx((0.0028 / 3 + 0.002 + 0.003) / 3)


def test_id_only_runs_from_another_file_replace_each_files_own(tmp_path):
    files = three_llm_seeds(tmp_path)  # every file's own ID-only: 0.9850 on seeds 2021, 2022
    part_a = write_results(tmp_path / "part_a.json", 0, {}, {2021: 0.9840, 2022: 0.9860, 2023: 0.9855})
    groups = {g.llm_seed: g for g in read_llm_seeds(files, id_only=read_id_only(part_a))}
    # LARR 0.9855, 0.9865 against 0.9840, 0.9860; seed 2026's 2023 run (0.9990) is now paired too
    assert groups[2024].gaps == pytest.approx([0.0015, 0.0005])
    assert groups[2026].stage3_seeds == [2021, 2022, 2023]
    assert groups[2026].gaps == pytest.approx([0.0040, 0.0020, 0.0135])
    assert main([*map(str, files), "--id-only", str(part_a), "--out", str(tmp_path / "o")]) == 0
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["id_only_source"] == str(part_a)
    assert f"ID-only run of its stage-3 seed in `{part_a}`" in (tmp_path / "o" / "summary.md").read_text()


def test_merging_refuses_a_repeated_run_or_another_option(tmp_path):
    first = three_llm_seeds(tmp_path)[0]
    again = write_results(tmp_path / "again.json", 2024, {2022: 0.9866}, {2022: 0.9850})
    with pytest.raises(ValueError, match=r"stage-3 seed\(s\) \['2022'\] repeat"):
        read_llm_seeds([first, again])
    other = write_results(tmp_path / "other.json", 2024, {2023: 0.9860}, {2023: 0.9852},
                          config={"ctr": {"align_weight": 0.01}})
    with pytest.raises(ValueError, match="configs differ"):
        read_llm_seeds([first, other])


def test_cli_writes_the_summary_and_refuses_repeated_llm_seeds(tmp_path, capsys):
    files = three_llm_seeds(tmp_path)
    assert main([*map(str, files), "--out", str(tmp_path / "out")]) == 0
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [g["llm_seed"] for g in written["llm_seeds"]] == [2024, 2025, 2026]
    assert "over the stages-1/2 seeds" in capsys.readouterr().out
    with pytest.raises(ValueError, match="repeat"):
        summarise([read_llm_seed(files[0]), read_llm_seed(files[0])])
    with pytest.raises(ValueError, match="repeat"):  # the same file twice on the command line: runs counted twice
        main([str(files[0]), str(files[0])])


def test_against_pairs_each_run_with_the_other_options_run_of_the_same_two_seeds(tmp_path):
    files = three_llm_seeds(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    # the other option: LLM seed 2024 split over two files (merged), 2025 and 2026 in one each; its ID-only runs unused
    against = [
        write_results(other / "a1.json", 2024, {2021: 0.9850}, {2021: 0.1}),
        write_results(other / "a2.json", 2024, {2022: 0.9870}, {2022: 0.1}),
        write_results(other / "b.json", 2025, {2021: 0.9860, 2022: 0.9875}, {}),
        write_results(other / "c.json", 2026, {2021: 0.9885, 2022: 0.9870, 2023: 0.9980}, {}),
    ]
    assert main([*map(str, files), "--against", *map(str, against), "--out", str(tmp_path / "o")]) == 0
    written = json.loads((tmp_path / "o" / "summary.json").read_text())
    gaps = {g["llm_seed"]: g["gaps"] for g in written["llm_seeds"]}
    # 0.9855-0.9850, 0.9865-0.9870 | 0.9870-0.9860, 0.9870-0.9875 | 0.9880-0.9885, 0.9880-0.9870, 0.9990-0.9980
    assert gaps[2024] == pytest.approx([0.0005, -0.0005])
    assert gaps[2025] == pytest.approx([0.0010, -0.0005])
    assert gaps[2026] == pytest.approx([-0.0005, 0.0010, 0.0010])
    means = [0.0, 0.00025, 0.0015 / 3]
    assert written["gap_mean"] == pytest.approx(sum(means) / 3)
    mean = sum(means) / 3
    sd = (sum((m - mean) ** 2 for m in means) / 2) ** 0.5
    assert written["gap_ci95"] == pytest.approx(4.303 * sd / 3**0.5, rel=1e-3)  # t(0.975, df 2) = 4.303
    assert written["against_sources"] == [str(p) for p in against] and written["id_only_source"] is None
    text = (tmp_path / "o" / "summary.md").read_text()
    assert "paired gap over the other option" in text and "another LARR option" in text


def test_against_refuses_a_missing_llm_seed_and_id_only_beside_it(tmp_path, capsys):
    files = three_llm_seeds(tmp_path)
    partial = [write_results(tmp_path / "x.json", 2024, {2021: 0.9850, 2022: 0.9850}, {})]
    with pytest.raises(ValueError, match="stages-1/2 seed 2025: no LARR runs"):
        main([*map(str, files), "--against", *map(str, partial)])
    with pytest.raises(SystemExit):
        main([*map(str, files), "--against", str(partial[0]), "--id-only", str(files[0])])
    assert "exclude each other" in capsys.readouterr().err
