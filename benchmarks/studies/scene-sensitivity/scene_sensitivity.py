"""Does the CTR listen to what a scene text *means*? Swap one scene text for another meaning vs a paraphrase.

    python benchmarks/studies/scene-sensitivity/scene_sensitivity.py --run runs/tiny                       # variant larr, 2000 test rows
    python benchmarks/studies/scene-sensitivity/scene_sensitivity.py --run runs/tiny --variant id_only --out sensitivity.json

For the first ``--rows`` test requests and every scene feature whose texts have known meanings (the synthetic
world's concepts, :data:`larr.data.synth_vocabulary.SCENE_CONCEPTS`: time_slot, weather, place; or ``--concepts FILE``, a JSON
``{feature: {meaning: [texts]}}``), the request's text of that feature is replaced by each text of the feature in
turn, everything else fixed, and the click probability is recomputed as the server computes it (the text is both
its ID field -- the OOV row when train never had it -- and the frozen embedder's input). A replacement is

* a **paraphrase** when it means the same as the request's text ("blizzard" -> "heavy snow");
* **another meaning** otherwise ("blizzard" -> "heatwave").

Reports mean |delta CTR| over (request, replacement) pairs of both kinds, per feature and overall, and their ratio:
a model that reads meaning moves the CTR for another meaning and hardly for a paraphrase. Twice: ``served`` (the
replacement goes into the ID field and the embedder, as a request would) and ``text_only`` (the ID field keeps the
request's text; only the embedder reads the replacement: how much the model listens to the LLM's scene vector).
``id_only`` moves only through the ID fields, a reference for the served numbers. Requests whose text has no known
meaning are skipped. No Triton: the run's files through larr.models, deterministic.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from larr.data.schema import Interactions, load_dataset
from larr.data.synth_vocabulary import SCENE_CONCEPTS
from larr.layout import RunLayout, Variant
from larr.models.ctr_model import LarrCTR
from larr.models.embedder import embed_texts
from larr.models.field_vocab import FieldVocab
from larr.text import format_scene_feature
from larr.training.ctr import load_frozen_embedder

DEFAULT_ROWS = 2000


@dataclass(frozen=True)
class Sensitivity:
    """Mean |delta CTR| of one feature (or all) for both kinds of replacement."""

    paraphrase: float  # mean |delta CTR| when the text is replaced by a paraphrase of the same meaning
    other_meaning: float  # ... by a text of another meaning
    paraphrase_pairs: int  # (request, replacement) pairs averaged
    other_meaning_pairs: int

    @property
    def ratio(self) -> float:
        """other_meaning / paraphrase: how much more a change of meaning moves the CTR than a change of words."""
        return self.other_meaning / self.paraphrase if self.paraphrase > 0 else float("inf")

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def synth_meanings() -> dict[str, dict[str, list[str]]]:
    """The synthetic world's scene concepts as ``{feature: {meaning: [texts]}}``."""
    return {feature: {name: list(texts) for name, (_, texts) in concepts.items()} for feature, concepts in SCENE_CONCEPTS.items()}


class SensitivityModel:
    """A run's CTR model (``variant``), its frozen embedder, and the dataset its config names."""

    def __init__(self, run: Path, variant: Variant | str = Variant.LARR, data: Path | None = None):
        layout = RunLayout(Path(run))
        self.variant = Variant.parse(variant)
        if self.variant.whole_scene:
            raise ValueError(f"variant {self.variant.value!r} reads one whole-scene embedding, not one per feature")
        self.model, vocab = LarrCTR.load(layout.ctr_dir(self.variant))
        self.model.eval()
        self.vocab = FieldVocab.from_dict(vocab)
        self.embedder = self.tokenizer = None
        if self.variant.uses_llm:
            self.embedder, self.tokenizer = load_frozen_embedder(layout.root, self.variant)
        data = data or layout.dataset_dir()
        if data is None:
            raise FileNotFoundError(f"{layout.config_file}: names no dataset that exists; pass --data")
        self.dataset = load_dataset(data, splits=("test",))

    def embed(self, texts: list[str]) -> torch.Tensor:
        """(V, D) embeddings of formatted scene texts ((0, 1) zeros when the variant reads none)."""
        if self.embedder is None:
            return torch.zeros(len(texts), 1)
        return torch.from_numpy(embed_texts(self.embedder, self.tokenizer, texts))

    @torch.no_grad()
    def score(self, rows: Interactions, scene: list[list[str]], table: torch.Tensor, index: dict[str, int],
              id_scene: list[list[str]] | None = None) -> np.ndarray:
        """Click probabilities (N,) of ``rows`` with scene texts ``scene`` (K columns of N raw texts) for the
        embedder and ``id_scene`` (default: the same) for the scene ID fields."""
        features = self.dataset.info.scene_features
        ids = id_scene if id_scene is not None else scene
        sparse = torch.from_numpy(self.vocab.transform([rows.user_id, rows.item_id, *ids]))  # (N, F)
        codes = np.array([[index[format_scene_feature(f, text)] for text in column] for f, column in zip(features, scene)]).T
        embeddings = table[torch.from_numpy(codes)]  # (N, K, D)
        item_rows = torch.from_numpy(rows.item_id + 1)  # (N,) row of item_text, 0 = unknown
        logits = self.model(sparse, embeddings if self.embedder is not None else None, item_rows).logits
        return torch.sigmoid(logits).numpy()


MODES = ("served", "text_only")  # the replacement reaches the ID field and the embedder / the embedder only


def measure(model: SensitivityModel, rows: int = DEFAULT_ROWS, meanings: dict | None = None) -> dict[str, dict[str, Sensitivity]]:
    """Per mode (:data:`MODES`), per feature with known meanings and ``"all"``: mean |delta CTR| for paraphrases
    and other meanings."""
    meanings = meanings or synth_meanings()
    test = model.dataset.test
    test = test.subset(np.arange(min(rows, len(test))))
    features = model.dataset.info.scene_features
    studied = [f for f in features if f in meanings]
    if not studied:
        raise ValueError(f"no scene feature of {list(features)} has known meanings ({sorted(meanings)})")
    texts = {format_scene_feature(f, t) for k, f in enumerate(features) for t in test.scene[k]}
    texts |= {format_scene_feature(f, t) for f in studied for group in meanings[f].values() for t in group}
    texts = sorted(texts)
    index = {text: i for i, text in enumerate(texts)}
    table = model.embed(texts)
    original = [list(column) for column in test.scene]
    base = model.score(test, original, table, index)  # (N,)
    return {mode: _measure_mode(model, test, original, studied, meanings, table, index, base, mode) for mode in MODES}


def _measure_mode(model, test, original, studied, meanings, table, index, base, mode: str) -> dict[str, Sensitivity]:
    features = model.dataset.info.scene_features
    sums: dict[str, dict[bool, list[float]]] = {}
    for f in studied:
        k = features.index(f)
        meaning_of = {t: name for name, group in meanings[f].items() for t in group}
        own = np.array([meaning_of.get(t) for t in original[k]], dtype=object)  # (N,) None: unknown meaning
        totals = {True: [0.0, 0], False: [0.0, 0]}  # same meaning? -> [sum |delta|, pairs]
        for name, group in meanings[f].items():
            for text in group:
                swapped = [*original[:k], [text] * len(test), *original[k + 1 :]]
                id_scene = original if mode == "text_only" else swapped
                delta = np.abs(model.score(test, swapped, table, index, id_scene) - base)  # (N,)
                known = own != None  # noqa: E711 -- elementwise on an object array
                changed = np.array(original[k], dtype=object) != text
                for same in (True, False):
                    pick = known & changed & ((own == name) if same else (own != name))
                    totals[same][0] += float(delta[pick].sum())
                    totals[same][1] += int(pick.sum())
        sums[f] = totals
    result = {f: _sensitivity(totals) for f, totals in sums.items()}
    overall = {same: [sum(t[same][0] for t in sums.values()), sum(t[same][1] for t in sums.values())] for same in (True, False)}
    result["all"] = _sensitivity(overall)
    return result


def _sensitivity(totals: dict[bool, list]) -> Sensitivity:
    (same_sum, same_n), (other_sum, other_n) = totals[True], totals[False]
    return Sensitivity(same_sum / max(same_n, 1), other_sum / max(other_n, 1), same_n, other_n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/studies/scene-sensitivity/scene_sensitivity.py", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="run folder of `larr train` (ctr/, embed/, config.yaml)")
    parser.add_argument("--variant", default=Variant.LARR.value, help="CTR model under RUN/ctr/ (default larr)")
    parser.add_argument("--data", type=Path, help="dataset folder (default: the one RUN/config.yaml names)")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="first N test rows (default %(default)s)")
    parser.add_argument("--concepts", type=Path, help="JSON {feature: {meaning: [texts]}} (default: the synthetic world's)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    try:
        meanings = json.loads(args.concepts.read_text(encoding="utf-8")) if args.concepts else None
        result = measure(SensitivityModel(args.run, args.variant, args.data), args.rows, meanings)
    except (FileNotFoundError, ValueError) as error:
        print(f"scene_sensitivity: {error}", file=sys.stderr)
        return 2
    for mode, per_feature in result.items():
        for feature, s in per_feature.items():
            print(f"{mode:>9} {feature:>12}  paraphrase {s.paraphrase:.5f} ({s.paraphrase_pairs} pairs)   other meaning "
                  f"{s.other_meaning:.5f} ({s.other_meaning_pairs} pairs)   ratio {s.ratio:.2f}")
    if args.out:
        payload = {"run": str(args.run), "variant": Variant.parse(args.variant).value, "rows": args.rows,
                   "mean_abs_delta_ctr": {f: s.to_dict() for f, s in result["served"].items()},
                   "mean_abs_delta_ctr_text_only": {f: s.to_dict() for f, s in result["text_only"].items()}}
        args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
