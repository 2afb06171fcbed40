"""What the synthetic test split and the LLM's general text really hold: the held-out shares, the strict option.

docs/results.md quotes these numbers; ``larr data synth`` prints the shares of the data it writes.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from larr.data.schema import write_dataset
from larr.data.synth import SCENE_FEATURES, SynthConfig, generate, held_out_share, held_out_texts

SMALL = {"num_users": 30, "shops_per_category": 2, "train_rows": 300, "valid_rows": 100, "test_rows": 100, "seed": 5}

# sha256 of every file `write_dataset(generate(SynthConfig(**SMALL)))` wrote at commit 380fab2, before the strict
# option existed: the default world must stay byte for byte what every earlier result was measured on. (A
# deliberate change to the world updates these, and says so.)
DEFAULT_DIGESTS = {
    "dataset.json": "c8be38e503cb0f3d63372781ea104d25f5a7ea52d6fb42d059c198bbb5ad931c",
    "items.csv": "c763ed93d08463208d2ce4bc992562903084192d16df16a5b360b7fb4d5b90f2",
    "knowledge.txt": "1335e1402c44c9ed003e2444af707309fdd2ffa53f099b86a78c55fe263edfaa",
    "test.csv": "eddf4f03196a674c4378f8361edb360109abc074ceb82c16555fcb3d3c1afa7a",
    "train.csv": "2d1a9d78c64679d5953aa80d46350cd7ed6b0441a94c54a53061cc9ce233790a",
    "valid.csv": "03f5b2251c435f2db36f82c7a55ae875800dda168ab0bfef66827764172e9df9",
}

# the knowledge sentence templates of larr/data/synth.py, each naming its paraphrase(s) or query(ies)
TEMPLATES = (
    re.compile(r"^(?P<a>.+?) means .+\.$"),
    re.compile(r"^(?P<a>.+?) is like (?P<b>.+?) or (?P<c>.+?)\.$"),
    re.compile(r"^with (?P<a>.+?), people (?:often|rarely) want .+\.$"),
    re.compile(r"^(?P<a>.+?) is a kind of .+\.$"),
    re.compile(r"^someone looking for (?P<a>.+?) may also like (?P<b>.+?)\.$"),
)


def digests(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def named_texts(line: str) -> set[str]:
    for template in TEMPLATES:
        match = template.match(line)
        if match:
            return set(match.groupdict().values())
    raise AssertionError(f"knowledge line matches no template: {line!r}")


@pytest.fixture(scope="module")
def worlds():
    return generate(SynthConfig(**SMALL)), generate(SynthConfig(**SMALL, strict_knowledge=True))


def test_default_output_is_byte_identical_to_before_the_strict_option(tmp_path):
    write_dataset(tmp_path, generate(SynthConfig(**SMALL)))
    assert digests(tmp_path) == DEFAULT_DIGESTS


def test_strict_knowledge_drops_every_held_out_text_and_changes_nothing_else(worlds, tmp_path):
    default, strict = worlds
    write_dataset(tmp_path / "default", default)
    write_dataset(tmp_path / "strict", strict)
    differing = {name for name, digest in digests(tmp_path / "strict").items() if digests(tmp_path / "default")[name] != digest}
    assert differing == {"knowledge.txt"}

    held = set().union(*held_out_texts(SynthConfig().held_out_per_concept).values())
    named_by_default = set().union(*(named_texts(line) for line in default.knowledge))
    named_by_strict = set().union(*(named_texts(line) for line in strict.knowledge))
    assert held <= named_by_default  # the default LLM reads every held-out paraphrase and query
    assert not held & named_by_strict  # the strict one reads none
    assert named_by_strict == named_by_default - held  # ... and every text train and valid use


def test_held_out_share_is_what_the_test_split_holds():
    config = SynthConfig(num_users=30, shops_per_category=2, train_rows=3000, valid_rows=300, test_rows=3000, seed=11)
    world = generate(config)
    shares = held_out_share(world.test, config.held_out_per_concept)
    # independently: a test text that train and valid never use (at 3000 train rows every kept paraphrase occurs)
    for k, feature in enumerate(SCENE_FEATURES[:4]):
        seen = set(world.train.scene[k]) | set(world.valid.scene[k])
        assert shares[feature] == pytest.approx(np.mean([t not in seen for t in world.test.scene[k]]), abs=0), feature
        assert shares[feature] == pytest.approx(config.unseen_paraphrase_rate, abs=0.05), feature  # ~4.5 binomial std
    # recent_clicks names shops, every one of which train uses: never a held-out text, so 40 % overall, not 50 %
    assert shares["recent_clicks"] == 0.0
