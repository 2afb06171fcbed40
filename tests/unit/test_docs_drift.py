"""README's and docs/'s result tables are what their committed results files give (`larr docs render --check`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from larr.docs_render import documents, render_documents

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rendered() -> dict[str, object]:
    return {str(result.path.relative_to(ROOT)): result for result in render_documents(ROOT)}


@pytest.mark.parametrize("document", [str(path.relative_to(ROOT)) for path in documents(ROOT)])
def test_every_rendered_table_matches_its_results_files(rendered, document: str) -> None:
    result = rendered[document]
    if result.problems:
        pytest.fail("\n".join(result.problems), pytrace=False)
    if result.changed:
        pytest.fail(f"{document}: tables differ from their results files (run `larr docs render`):\n{result.diff(ROOT)}",
                    pytrace=False)
