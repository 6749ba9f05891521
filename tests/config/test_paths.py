"""didray.config.paths: one engine for override keys, search axes and error locations."""

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from didray.config.paths import PathError, dotted, get, parse, put

names = st.from_regex(r"[a-z_][a-z0-9_]{0,5}", fullmatch=True)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), names)
trees = st.recursive(scalars, lambda inner: st.lists(inner, min_size=1, max_size=3)
                     | st.dictionaries(names, inner, min_size=1, max_size=3), max_leaves=12)


@st.composite
def spots(draw):
    """A mapping, a path to one of its values (at any depth), and a new value."""
    data = draw(st.dictionaries(names, trees, min_size=1, max_size=3))
    node, path = data, []
    while isinstance(node, dict | list) and (not path or draw(st.booleans())):
        key = draw(st.sampled_from(sorted(node)) if isinstance(node, dict)
                   else st.integers(0, len(node) - 1))
        node, path = node[key], [*path, key]
    return data, tuple(path), draw(trees)


@pytest.mark.parametrize(("key", "path"), [
    ("train.lr", ("train", "lr")),
    ("regimes[1].tau", ("regimes", 1, "tau")),
    ("regimes.1.tau", ("regimes", 1, "tau")),
    ("a[0][2].b", ("a", 0, 2, "b")),
    ("search.seed", ("search", "seed")),
])
def test_keys_parse_to_their_parts(key, path):
    assert parse(key) == path


@pytest.mark.parametrize("key", ["", "train..lr", ".lr", "train.", "a[x]", "a[1", "a]", "[0]"])
def test_a_key_that_is_no_path_is_refused(key):
    with pytest.raises(PathError, match="is not a path like"):
        parse(key)


def test_both_spellings_of_a_list_item_are_one_path():
    assert dotted(parse("regimes.1.tau")) == dotted(parse("regimes[1].tau")) == "regimes[1].tau"


@settings(max_examples=60, deadline=None)
@given(spots())
def test_put_then_get_returns_the_value_and_leaves_the_data(spot):
    data, path, value = spot
    before = copy.deepcopy(data)
    changed = put(data, path, value)
    assert get(changed, path) == value
    assert data == before  # a copy was changed, not the data
    assert parse(dotted(path)) == path


@settings(max_examples=60, deadline=None)
@given(spots())
def test_put_changes_nothing_beside_its_path(spot):
    data, path, value = spot
    head = path[0]
    changed = put(data, path, value)
    assert {k: v for k, v in changed.items() if k != head} == \
        {k: v for k, v in data.items() if k != head}


def test_put_creates_missing_sections_but_not_list_items():
    assert put({"train": {"lr": 1}}, parse("eval.judge.k"), 4) == {
        "train": {"lr": 1}, "eval": {"judge": {"k": 4}}}
    with pytest.raises(PathError, match="^list index out of range"):
        put({"regimes": [{}, {}]}, parse("regimes[2].tau"), 1)
    with pytest.raises(PathError, match="give an item's index"):
        put({"regimes": [{}]}, parse("regimes.tau"), 1)
    with pytest.raises(PathError, match="a value, not a section"):
        put({"train": {"lr": 1}}, parse("train.lr.x"), 1)


class Inner(BaseModel):
    k: int = 1


class Outer(BaseModel):
    inner: Inner = Inner()
    lr: float = 0.1


def test_put_on_models_copies_them():
    outer = Outer()
    changed = put({"eval": outer}, parse("eval.inner.k"), 8)["eval"]
    assert (changed.inner.k, changed.lr, outer.inner.k) == (8, 0.1, 1)
    assert get(changed, parse("inner.k")) == 8
