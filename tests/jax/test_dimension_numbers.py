"""Muon dimension numbers read from the traced contraction: the kernel axes the forward sums over (reduction)
and the ones it produces (output), stacked and expert axes in neither. Every expectation is written by hand."""

from __future__ import annotations

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax import lax
from optax.contrib import MuonDimensionNumbers as MDN

import wdmask
from wdmask import presets

D, H, HD, F, V, L, E = 8, 2, 4, 16, 16, 3, 4
X = jnp.ones((2, 5, D))
TOK = jnp.zeros((2, 5), jnp.int32)
KERNELS = [wdmask.Rule(optimizer="adamw"), wdmask.Rule(role="kernel", optimizer="muon")]
init = nn.initializers.lecun_normal()


def muon_axes(model, sample, rules=KERNELS) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """``{dotted path: (reduction, output)}`` of the leaves ``muon_dimension_numbers`` gives Muon."""
    tree = wdmask.muon_dimension_numbers(model, sample, rules)
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: isinstance(x, MDN))
    return {".".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path): (x.reduction_axis, x.output_axis)
            for path, x in flat if isinstance(x, MDN)}


# -- linen layers -------------------------------------------------------------------------------------------


class Layers(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(D, name="dense")(x)
        q = nn.DenseGeneral((H, HD), axis=-1, name="heads")(x)  # (d, heads, hd)
        x = nn.DenseGeneral(D, axis=(-2, -1), name="merge")(q)  # (heads, hd, d)
        x = nn.Einsum((F, D), "btd,fd->btf", use_bias=False, name="einsum")(x)  # (f, d): written transposed
        raw = self.param("raw", init, (D, F))  # (d, f) contracted on its axis 1
        x = jnp.einsum("btf,df->btd", x, raw)
        t = self.param("t", init, (F, D))
        x = x @ t.T
        return nn.Conv(4, (3, 3), name="conv")(x[..., None].repeat(3, -1))  # (kh, kw, in, out)


def test_linen_layers():
    assert muon_axes(Layers(), X) == {
        "dense.kernel": ((0,), (1,)),
        "heads.kernel": ((0,), (1, 2)),
        "merge.kernel": ((0, 1), (2,)),
        "einsum.kernel": ((1,), (0,)),
        "raw": ((1,), (0,)),
        "t": ((1,), (0,)),
        "conv.kernel": ((0, 1, 2), (3,)),
    }


# -- a MaxText-style scanned decoder --------------------------------------------------------------------------


class Attention(nn.Module):
    @nn.compact
    def __call__(self, x):
        q, k, v = (nn.DenseGeneral((H, HD), name=n)(x) for n in ("query", "key", "value"))
        att = nn.softmax(jnp.einsum("bthd,bshd->bhts", q, k) / jnp.sqrt(HD), axis=-1)
        return nn.DenseGeneral(D, axis=(-2, -1), name="out")(jnp.einsum("bhts,bshd->bthd", att, v))


class DecoderLayer(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        x = x + Attention(name="self_attention")(nn.RMSNorm(name="pre_norm")(x))
        h = nn.gelu(nn.DenseGeneral(F, name="wi")(nn.RMSNorm(name="post_norm")(x)))
        return x + nn.DenseGeneral(D, name="wo")(h), None


class Decoder(nn.Module):
    """MaxText ``Decoder`` with ``scan_layers=True``: the layers' params stacked on ``scan_axis`` (MaxText's
    ``param_scan_axis``), each layer rematerialized when ``remat``."""

    scan_axis: int = 1
    remat: bool = False

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(V, D, name="token_embedder")(tokens)
        layer = nn.remat(DecoderLayer, prevent_cse=False) if self.remat else DecoderLayer
        stack = nn.scan(layer, variable_axes={"params": self.scan_axis}, split_rngs={"params": True},
                        in_axes=nn.broadcast, length=L, metadata_params={nn.PARTITION_NAME: "layers"})
        x, _ = stack(name="layers")(x, None)
        return nn.DenseGeneral(V, name="logits_dense")(nn.RMSNorm(name="decoder_norm")(x))


def hand_written(scan_axis: int) -> dict:
    """The dimension numbers MaxText writes by hand for its decoder, the layer axis at ``scan_axis``."""
    if scan_axis == 1:
        qkv = MDN((0,), (2, 3))  # (embed, layers, heads, head_dim)
        out = MDN((0, 2), (3,))  # (heads, layers, head_dim, embed)
        mlp = MDN((0,), (2,))  # (embed, layers, mlp), (mlp, layers, embed)
    else:
        qkv, out, mlp = MDN((1,), (2, 3)), MDN((1, 2), (3,)), MDN((1,), (2,))
    dense = {"kernel": qkv, "bias": None}
    return {
        "token_embedder": {"embedding": None},
        "layers": {
            "pre_norm": {"scale": None}, "post_norm": {"scale": None},
            "self_attention": {"query": dense, "key": dense, "value": dense, "out": {"kernel": out, "bias": None}},
            "wi": {"kernel": mlp, "bias": None}, "wo": {"kernel": mlp, "bias": None},
        },
        "decoder_norm": {"scale": None},
        "logits_dense": {"kernel": None, "bias": None},  # the output head: AdamW
    }


@pytest.mark.parametrize(("scan_axis", "remat"), [(1, False), (0, True)], ids=["axis1", "axis0-remat"])
def test_scanned_decoder_matches_maxtext_hand_written(scan_axis, remat):
    dims = wdmask.muon_dimension_numbers(Decoder(scan_axis, remat), TOK, presets.standard + presets.muon)
    assert dims == hand_written(scan_axis)


def test_optax_muon_on_the_scanned_decoder_equals_the_hand_written_numbers():
    model = Decoder()
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(model.init, jax.random.key(0), TOK)["params"]
    params, grads = (jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape, np.float32)), shapes)
                     for _ in range(2))

    def update(dims):
        tx = optax.contrib.muon(1e-2, muon_weight_dimension_numbers=dims)
        return jax.jit(lambda g, p: tx.update(g, tx.init(p), p)[0])(grads, params)

    traced = update(wdmask.muon_dimension_numbers(model, TOK, presets.standard + presets.muon))
    by_hand = update(hand_written(1))
    assert jax.tree.all(jax.tree.map(lambda a, b: a.dtype == jnp.float32 and bool(jnp.array_equal(a, b)),
                                     traced, by_hand))


# -- NNX, Equinox -------------------------------------------------------------------------------------------


class NnxBlock(nnx.Module):
    def __init__(self, rngs):
        self.fc = nnx.Linear(D, D, rngs=rngs)

    def __call__(self, x):
        return x + self.fc(x)


class NnxModel(nnx.Module):
    def __init__(self, rngs):
        self.lin = nnx.Linear(D, F, rngs=rngs)  # (in, out)
        self.ein = nnx.Einsum("btf,df->btd", (D, F), rngs=rngs)  # (out, in)

        @nnx.split_rngs(splits=L)
        @nnx.vmap(in_axes=0, out_axes=1)
        def make(rngs):
            return NnxBlock(rngs)

        self.blocks = make(rngs)  # fc.kernel (in, layers, out)

    def __call__(self, x):
        @nnx.scan(in_axes=(1, nnx.Carry), out_axes=nnx.Carry)
        def run(block, x):
            return block(x)

        return run(self.blocks, self.ein(self.lin(x)))


def test_nnx_linear_einsum_and_vmap_stack():
    model = nnx.eval_shape(lambda: NnxModel(nnx.Rngs(0)))
    assert muon_axes(model, X) == {"lin.kernel": ((0,), (1,)), "ein.kernel": ((1,), (0,)),
                                   "blocks.fc.kernel": ((0,), (2,))}


class Stored(eqx.Module):
    weight: jax.Array  # (in, out): not torch's layout, contracted as x @ weight

    def __call__(self, x):
        return x @ self.weight


class EqxModel(eqx.Module):
    lin: eqx.nn.Linear
    stored: Stored

    def __call__(self, x):
        return self.stored(self.lin(x))


def test_equinox_linear_and_a_weight_stored_in_out():
    model = EqxModel(eqx.nn.Linear(D, F, key=jax.random.key(0)), Stored(jnp.ones((F, 4))))
    assert muon_axes(model, jnp.ones(D)) == {"lin.weight": ((1,), (0,)), "stored.weight": ((0,), (1,))}


# -- MoE expert stacks and loops over stacked kernels -----------------------------------------------------------


class Experts(nn.Module):
    @nn.compact
    def __call__(self, x):
        t = x.reshape(-1, D)
        ids = jnp.argmax(t @ self.param("router", init, (D, E)), -1)  # routed by the data
        gathered = jnp.einsum("td,tdf->tf", t, self.param("w_gather", init, (E, D, F))[ids])
        dispatch = jax.nn.one_hot(ids, E)[:, :, None] * t[:, None, :]
        dense = jnp.einsum("ted,edf->tef", dispatch, self.param("w_einsum", init, (E, D, F))).sum(1)
        ragged = lax.ragged_dot(t, self.param("w_ragged", init, (E, D, F)), jnp.full((E,), t.shape[0] // E))
        return gathered + dense + ragged


class Loops(nn.Module):
    @nn.compact
    def __call__(self, x):
        lead = self.param("lead", init, (L, D, F))  # stacked at 0, sliced by a loop index
        mid = self.param("mid", init, (F, L, D))  # stacked at 1
        x = lax.fori_loop(0, L, lambda i, h: h @ lead[i][:, :D], x)
        return lax.fori_loop(0, L, lambda i, h: jnp.einsum("btf,fd->btd", jnp.tile(h, 2), mid[:, i]), x)


def test_expert_stacks_and_loop_slices_are_batch_axes():
    assert muon_axes(Experts(), X) == {"router": ((0,), (1,)), "w_gather": ((1,), (2,)), "w_einsum": ((1,), (2,)),
                                       "w_ragged": ((1,), (2,))}
    assert muon_axes(Loops(), X) == {"lead": ((1,), (2,)), "mid": ((0,), (2,))}


class Ensemble(nn.Module):
    @nn.compact
    def __call__(self, x):  # the input is not batched: the vmapped dot_general keeps the stacked axis free
        dense = nn.vmap(nn.Dense, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=None,
                        axis_size=L)
        return dense(F, name="members")(x)


def test_a_vmapped_stack_of_unbatched_input_keeps_its_stacked_axis_out():
    assert muon_axes(Ensemble(), X) == {"members.kernel": ((1,), (2,))}  # kernel (members, in, out)


class TwoWays(nn.Module):
    @nn.compact
    def __call__(self, x):
        twice = self.param("twice", init, (D, D))  # contracted twice the same way
        w = self.param("w", init, (D, D))  # contracted on axis 0 and on axis 1
        flat = self.param("flat", init, (D * H, D))  # reshaped to (d, heads, d): axis 0 split in two
        return x @ twice + (2 * x) @ twice + x @ w + x @ w.T + jnp.einsum("btd,dhe->bthe", x,
                                                                        flat.reshape(D, H, D)).sum(2)


def test_a_kernel_contracted_two_ways_is_unknown_and_raises():
    inv = {i.dotted: i.contract_axes for i in wdmask.describe(TwoWays(), sample=X)}
    assert inv == {"twice": ((0,), (1,)), "w": None, "flat": None}
    with pytest.raises(wdmask.MaskError, match=r"2 parameter\(s\) labelled 'muon' have no known contraction axes: "
                                               r"flat, w"):
        muon_axes(TwoWays(), X)


class WeightNormed(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.WeightNorm(nn.Dense(F, name="dense"), name="wn")(x)
        v = self.param("v", init, (F, D))  # reaches the contraction whole and through its own column norms
        return x @ (v / jnp.linalg.norm(v, axis=0, keepdims=True))


def test_weight_norm_reads_the_kernel_once():
    assert muon_axes(WeightNormed(), X) == {"dense.kernel": ((0,), (1,)), "v": ((0,), (1,))}


def test_without_a_forward_pass_only_layout_conventions():
    params = {"Dense_0": {"kernel": jnp.zeros((D, F))}, "Conv_0": {"kernel": jnp.zeros((3, 3, 3, 4))},
              "DenseGeneral_0": {"kernel": jnp.zeros((D, H, HD))}}
    rules = [wdmask.Rule(optimizer="muon"), wdmask.Rule(path="DenseGeneral_0.*", optimizer="adamw")]
    assert wdmask.muon_dimension_numbers(params, rules=rules) == {
        "Dense_0": {"kernel": MDN((0,), (1,))}, "Conv_0": {"kernel": MDN((0, 1, 2), (3,))},
        "DenseGeneral_0": {"kernel": None}}
    with pytest.raises(wdmask.MaskError, match=r"no known contraction axes: DenseGeneral_0.kernel"):
        wdmask.muon_dimension_numbers(params, rules=rules[:1])
