"""``flatten``: the leaves, key paths and treedef of any params-like tree are jax's own."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx  # imported here, not inside a hypothesis test: importing it raises the recursion limit
from flax.core import FrozenDict
from hypothesis import given, settings
from hypothesis import strategies as st

from wdmask._errors import MaskError
from wdmask._jax._tree import flatten

_names = st.sampled_from(["Dense_0", "LayerNorm_0", "kernel", "bias", "scale", "b", "a", "B", "0", "10", "2", ""])
_arrays = st.sampled_from([np.zeros((2, 3), np.float32), np.zeros(3, np.float64), jnp.zeros((1, 2)),
                           np.int32(4), 1.5, jax.ShapeDtypeStruct((4, 4), jnp.bfloat16), np.zeros((), np.bool_)])
# leaves, None (no leaf) and containers of every kind (dicts, FrozenDicts, lists, tuples, empty ones too)
_trees = st.recursive(
    st.one_of(_arrays, st.none()),
    lambda children: st.one_of(
        st.dictionaries(_names, children, max_size=4),
        st.dictionaries(_names, children, max_size=3).map(FrozenDict),
        st.lists(children, max_size=2),
        st.tuples(children)),
    max_leaves=12)


def _key(k):
    return str(k.key if isinstance(k, jax.tree_util.DictKey) else k.idx)


def _jax_view(tree):
    """What jax itself says: key paths (as strings), leaves and treedef."""
    pairs, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [tuple(map(_key, kp)) for kp, _ in pairs], [x for _, x in pairs], treedef


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_names, _trees, max_size=4))
def test_flatten_gives_jax_leaves_key_paths_and_treedef(tree):
    keypaths, raws, treedef = _jax_view(tree)
    leaves, got_treedef = flatten(tree)
    assert got_treedef == treedef
    assert [leaf.keys for leaf in leaves] == [leaf.path for leaf in leaves] == keypaths
    assert [leaf.shape for leaf in leaves] == [tuple(np.shape(x)) for x in raws]
    assert [leaf.dtype for leaf in leaves] == [str(jnp.result_type(x) if not hasattr(x, "dtype") else x.dtype)
                                               for x in raws]


def test_plain_dicts_are_read_in_sorted_key_order_without_none_leaves():
    tree = {"b": {"kernel": np.zeros((2, 2)), "bias": None}, "a": {"z": np.zeros(1), "c": np.zeros(3)}, "n": None}
    leaves, treedef = flatten(tree)
    assert [leaf.path for leaf in leaves] == [("a", "c"), ("a", "z"), ("b", "kernel")]
    assert treedef == jax.tree_util.tree_structure(tree)
    assert treedef.unflatten([leaf.shape for leaf in leaves]) == {
        "a": {"c": (3,), "z": (1,)}, "b": {"bias": None, "kernel": (2, 2)}, "n": None}


def test_non_string_keys_become_strings_in_jax_order():
    tree = {1: np.zeros(2), 0: {"w": np.zeros((2, 2))}}
    leaves, treedef = flatten(tree)
    assert treedef == jax.tree_util.tree_structure(tree)
    assert [leaf.path for leaf in leaves] == [("0", "w"), ("1",)]
    assert [leaf.keys for leaf in leaves] == _jax_view(tree)[0]


def test_a_variables_dict_keeps_its_collection_in_keys_only():
    variables = {"params": {"BatchNorm_0": {"scale": np.ones(3)}}, "batch_stats": {"BatchNorm_0": {"mean": np.zeros(3)}}}
    leaves, _ = flatten(variables)
    assert [(leaf.keys, leaf.path, leaf.trainable) for leaf in leaves] == [
        (("batch_stats", "BatchNorm_0", "mean"), ("BatchNorm_0", "mean"), False),
        (("params", "BatchNorm_0", "scale"), ("BatchNorm_0", "scale"), True)]


def test_keys_that_cannot_be_sorted_are_refused_with_a_clear_error():
    with pytest.raises(MaskError, match=r"a dict's keys cannot be sorted .* must be of one comparable type"):
        flatten({1: np.zeros(2), "b": np.zeros(2)})


def test_flax_boxes_are_one_leaf_each_unboxed_for_shape_and_dtype():
    import flax.linen as nn

    import wdmask

    tree = {"Dense_0": {"kernel": nn.Partitioned(np.zeros((2, 3), np.float32), names=("a", "b")),
                        "bias": wdmask.no_decay(lambda *_: np.zeros(3, np.float16))(None)},
            "bn": {"scale": nnx.Param(jnp.ones(4, jnp.float32)), "mean": nnx.BatchStat(jnp.zeros(4, jnp.float32))}}
    leaves, treedef = flatten(tree)
    boxes = (nn.meta.AxisMetadata, nnx.Variable)
    assert treedef == jax.tree_util.tree_structure(tree, is_leaf=lambda x: isinstance(x, boxes))
    assert [(leaf.path, leaf.shape, leaf.dtype, leaf.trainable, leaf.declared, leaf.boxed) for leaf in leaves] == [
        (("Dense_0", "bias"), (3,), "float16", True, True, True),
        (("Dense_0", "kernel"), (2, 3), "float32", True, False, True),
        (("bn", "mean"), (4,), "float32", False, False, True),  # an nnx.Variable that is no nnx.Param
        (("bn", "scale"), (4,), "float32", True, False, True)]


def test_a_leaf_that_is_no_array_is_refused_naming_its_path():
    with pytest.raises(MaskError, match=r"params leaf 'a\.b': expected an array, got str 'x'"):
        flatten({"a": {"b": "x"}})
