"""The companion methods on a hand-made world: stage 1's behaviour records, stage 2's item-views and persona pairs.

Every expected text is written out by hand here (not with larr.text's helpers), so a helper that drifted would fail.
"""

from __future__ import annotations

import numpy as np
import pytest

from larr.data.schema import Dataset, DatasetInfo, Interactions, Items
from larr.errors import DataValidationError
from larr.training.config import BehaviourConfig, EmbedConfig
from larr.training.corpus import behaviour_records, build_corpus
from larr.training.embed import loss_weights
from larr.training.pairs import PAIR_KINDS, build_pairs

FEATURES = ("time_slot", "weather", "place", "recent_search")


def _rows(rows: list[tuple[int, int, int, int, str, str, str, str]]) -> Interactions:
    """(user, item, label, timestamp, time_slot, weather, place, recent_search) tuples -> one split."""
    user, item, label, stamp, *scene = zip(*rows, strict=True)
    return Interactions(
        user_id=np.array(user, dtype=np.int64),
        item_id=np.array(item, dtype=np.int64),
        label=np.array(label, dtype=np.float32),
        timestamp=np.array(stamp, dtype=np.int64),
        scene=[list(column) for column in scene],
    )


@pytest.fixture()
def world() -> Dataset:
    items = Items(
        name=["Alpha", "Beta", "Gamma", "Delta", "Omega"],
        category=["noodles", "sushi", "sushi", "pizza", "noodles"],
        description=["alpha noodles", "beta sushi", "gamma sushi", "delta pizza", "omega noodles"],
    )
    train = _rows([  # rows out of time order on purpose; user 1 interleaved with user 0
        (0, 2, 0, 5, "dinner", "rain", "home", "q5"),
        (0, 0, 1, 1, "lunch", "sun", "office", "q1"),
        (1, 3, 1, 2, "night", "snow", "dorm", "r2"),
        (0, 1, 1, 3, "evening", "fog", "mall", "q3"),
        (1, 1, 0, 4, "night", "snow", "dorm", "r4"),
        (0, 3, 1, 4, "noon", "wind", "park", "q4"),
        (0, 2, 1, 6, "late", "hail", "bar", "q6"),
    ])
    # valid and test name an item (Omega) and texts that appear nowhere in train
    valid = _rows([(0, 4, 1, 7, "valid-slot", "valid-weather", "valid-place", "valid-query"),
                   (0, 4, 1, 8, "valid-slot", "valid-weather", "valid-place", "valid-query"),
                   (1, 4, 1, 8, "valid-slot", "valid-weather", "valid-place", "valid-query"),
                   (1, 2, 1, 9, "valid-slot", "valid-weather", "valid-place", "valid-query")])
    test = _rows([(0, 4, 1, 9, "test-slot", "test-weather", "test-place", "test-query")])
    return Dataset(DatasetInfo("hand", FEATURES, 2, 5), items, {"train": train, "valid": valid, "test": test})


def search(query: str) -> str:
    return f"<scene_recent_search>{query}</scene_recent_search>"


def click(name: str, slot: str, weather: str, place: str) -> str:
    return (f"<scene><scene_time_slot>{slot}</scene_time_slot><scene_weather>{weather}</scene_weather>"
            f"<scene_place>{place}</scene_place></scene><click>{name}</click>")


# user 0's train rows by timestamp: 1 (click Alpha), 3 (Beta), 4 (Delta), 5 (no click), 6 (Gamma); each row's search first
USER0 = [search("q1"), click("Alpha", "lunch", "sun", "office"), search("q3"), click("Beta", "evening", "fog", "mall"),
         search("q4"), click("Delta", "noon", "wind", "park"), search("q5"), search("q6"), click("Gamma", "late", "hail", "bar")]
USER1 = [search("r2"), click("Delta", "night", "snow", "dorm"), search("r4")]


def expected_records(sequence: list[str], window: int) -> set[str]:
    return {"<user>" + "".join(sequence[max(0, t - window) : t]) + "</user><emb>" + sequence[t]
            for t in range(1, len(sequence))}


@pytest.mark.parametrize("window", [2, 100])
def test_behaviour_records_are_the_users_own_train_behaviours_in_time_order_then_the_next(world, window):
    config = BehaviourConfig(records_per_user=100, window=window)  # more than there are: every target position
    records = behaviour_records(world, config, seed=3)
    assert len(records) == len(USER0) - 1 + len(USER1) - 1
    assert set(records) == expected_records(USER0, window) | expected_records(USER1, window)
    for record in records:
        assert not any(word in record for word in ("valid", "test", "Omega"))


def test_behaviour_records_sample_per_user_and_are_seeded(world):
    config = BehaviourConfig(records_per_user=2, window=3)
    records = behaviour_records(world, config, seed=3)
    user0 = [r for r in records if "q1" in r or "q3" in r or "q4" in r or "q5" in r or "q6" in r]
    assert len(records) == 4 and len(user0) == 2
    assert set(records) <= expected_records(USER0, 3) | expected_records(USER1, 3)
    assert behaviour_records(world, config, seed=3) == records


def test_behaviour_records_without_searches_are_clicks_only(world):
    records = behaviour_records(world, BehaviourConfig(records_per_user=100, window=100, search_feature=""), seed=0)
    clicks = [b for b in USER0 if b.endswith("</click>")]
    assert set(records) == expected_records(clicks, 100)  # user 1 has one click: no record


def test_behaviour_records_name_missing_features(world):
    with pytest.raises(DataValidationError, match="lunch_rush"):
        behaviour_records(world, BehaviourConfig(records_per_user=1, click_context=("lunch_rush",)), seed=0)


def test_corpus_off_is_todays_and_on_adds_only_the_records(world):
    today = build_corpus(world, seed=4)
    assert build_corpus(world, seed=4, behaviour=BehaviourConfig()) == today  # records_per_user 0 by default
    config = BehaviourConfig(records_per_user=100, window=2)
    with_records = build_corpus(world, seed=4, behaviour=config)
    assert sorted(with_records) == sorted(today + behaviour_records(world, config, seed=4))


def test_item_views_pair_each_items_name_with_its_own_description(world):
    pairs = build_pairs(world, "train", count=7, seed=0, history_length=2, views=("item_views",))
    assert pairs["item_views"].left == [f"<item><item_name>{n}</item_name></item>" for n in world.items.name]
    assert pairs["item_views"].right == [f"<item><item_desc>{d}</item_desc></item>" for d in world.items.description]


def test_persona_is_the_top_categories_of_the_users_latest_clicks(world):
    pairs = build_pairs(world, "train", count=30, seed=0, history_length=2, views=("persona",),
                        persona_top_k=2, persona_recent=3)
    # user 0's clicks by time: Alpha (noodles), Beta (sushi), Delta (pizza), Gamma (sushi); the latest 3 are
    # sushi, pizza, sushi -> sushi (2), pizza (1). User 1 (one click) has no user-user pairs and no persona.
    persona = "<user><item_cat>sushi</item_cat><item_cat>pizza</item_cat></user>"
    assert set(pairs["persona"].left) == {persona}
    own = {"Alpha", "Beta", "Delta", "Gamma"}
    for right in pairs["persona"].right:
        names = right.removeprefix("<user><click>").removesuffix("</click></user>").split("</click><click>")
        assert len(names) == 2 and set(names) <= own and len(set(names)) == 2
    # ties by name: on valid, user 1 clicked Omega (noodles) then Gamma (sushi), one each
    valid = build_pairs(world, "valid", count=10, seed=0, history_length=2, views=("persona",), persona_top_k=1)
    assert set(valid["persona"].left) == {"<user><item_cat>noodles</item_cat></user>"}


def test_view_kinds_leave_the_three_kinds_unchanged(world):
    plain = build_pairs(world, "train", count=20, seed=1, history_length=2)
    both = build_pairs(world, "train", count=20, seed=1, history_length=2, views=("item_views", "persona"))
    assert tuple(plain) == PAIR_KINDS
    for kind in PAIR_KINDS:
        assert (both[kind].left, both[kind].right) == (plain[kind].left, plain[kind].right)


def test_loss_weights_at_zero_are_todays_three_kinds():
    assert loss_weights(EmbedConfig()) == {"user_user": 1.0, "item_item": 1.0, "user_item": 1.0}
    assert loss_weights(EmbedConfig(weight_item_views=0.0, weight_persona=0.0)) == loss_weights(EmbedConfig())
    on = loss_weights(EmbedConfig(weight_item_views=1.0, weight_persona=0.5))
    assert list(on) == [*PAIR_KINDS, "item_views", "persona"] and on["persona"] == 0.5
