"""``larr docs render``: marker pairs, what replaces them, and the check that fails on drift."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from larr.docs_render import Block, MarkerError, find_blocks, render_documents, render_text, run_docs_render
from larr.result_tables import ResultsError

DOC = """# Title

<!-- render: numbers -->
| typed | by hand |
<!-- /render -->

Text after.
"""


def numbers(root: Path) -> str:
    return "| n |\n|---|\n| 42 |\n\n_from numbers.json_"


def missing(root: Path) -> str:
    raise ResultsError("results file numbers.json is missing")


TABLES = {"numbers": numbers, "missing": missing}


def test_blocks_are_the_marker_pairs_outside_code_fences() -> None:
    text = "a\n<!-- render: one -->\nold\n<!-- /render -->\n```\n<!-- render: shown -->\n```\n<!-- render: two -->\n<!-- /render -->\n"
    assert find_blocks(text) == [Block("one", 1, 3), Block("two", 7, 8)]


@pytest.mark.parametrize("text, message", [
    ("<!-- render: a -->\n", "has no <!-- /render -->"),
    ("<!-- /render -->\n", "closes no render marker"),
    ("<!-- render: a -->\n<!-- render: b -->\n<!-- /render -->\n", "opens before the one at line 1 is closed"),
])
def test_markers_that_do_not_pair_up_are_an_error(text: str, message: str) -> None:
    with pytest.raises(MarkerError, match=message):
        find_blocks(text, "doc.md")


def test_a_block_is_replaced_by_its_table_and_the_rest_of_the_text_is_kept() -> None:
    rendered, problems = render_text(DOC, Path("."), TABLES)
    assert problems == []
    assert rendered == DOC.replace("| typed | by hand |\n", numbers(Path(".")) + "\n")
    assert render_text(rendered, Path("."), TABLES) == (rendered, [])  # rendering twice changes nothing


def test_an_unknown_name_or_a_missing_results_file_leaves_the_block_and_says_why() -> None:
    doc = DOC.replace("numbers", "nonesuch") + "<!-- render: missing -->\nkept\n<!-- /render -->\n"
    rendered, problems = render_text(doc, Path("."), TABLES, "doc.md")
    assert rendered == doc
    assert problems == ["doc.md:3: no table is named 'nonesuch' (known: missing, numbers)",
                        "doc.md:8: missing: results file numbers.json is missing"]


def write_docs(root: Path, readme: str, doc: str) -> None:
    (root / "docs").mkdir()
    (root / "README.md").write_text(readme, encoding="utf-8")
    (root / "docs" / "guide.md").write_text(doc, encoding="utf-8")


def test_readme_and_every_doc_are_rendered(tmp_path: Path) -> None:
    write_docs(tmp_path, DOC, "no markers\n")
    results = render_documents(tmp_path, TABLES)
    assert [(r.path.name, r.changed) for r in results] == [("README.md", True), ("guide.md", False)]
    assert "+| 42 |" in results[0].diff(tmp_path).splitlines()
    assert "--- README.md (committed)" in results[0].diff(tmp_path)


def check(root: Path) -> int:
    return run_docs_render(argparse.Namespace(root=root, check=True))


def test_check_fails_with_a_diff_on_drift_and_passes_once_rendered(tmp_path: Path, capsys, monkeypatch) -> None:
    import larr.result_tables

    monkeypatch.setattr(larr.result_tables, "TABLES", TABLES)
    write_docs(tmp_path, DOC, "no markers\n")
    assert check(tmp_path) == 1
    out, err = capsys.readouterr()
    assert "-| typed | by hand |" in out and "stale result tables in README.md" in err
    assert (tmp_path / "README.md").read_text(encoding="utf-8") == DOC  # the check writes nothing

    assert run_docs_render(argparse.Namespace(root=tmp_path, check=False)) == 0
    assert check(tmp_path) == 0


def test_check_fails_on_a_marker_it_cannot_render(tmp_path: Path, capsys, monkeypatch) -> None:
    import larr.result_tables

    monkeypatch.setattr(larr.result_tables, "TABLES", TABLES)
    write_docs(tmp_path, DOC.replace("numbers", "missing"), "")
    assert check(tmp_path) == 1
    assert "missing: results file numbers.json is missing" in capsys.readouterr().err
