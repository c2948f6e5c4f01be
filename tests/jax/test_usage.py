"""Roles from usage on the JAX side: what the forward pass does with a parameter decides its role.

Expectations are stated from the principle behind ``presets.standard``: decay what the forward pass
contracts with activations (kernels, expert stacks) and token-embedding tables; decay nothing that is
only added (biases, position tables), multiplied elementwise (gains, norm scales), joined to the
sequence (tokens, latents) or passed through elementwise functions (``A_log``).
"""

from __future__ import annotations

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import wdmask
from wdmask import presets
from wdmask._engine import decide
from wdmask._jax._usage import trace_usage

B, T, D = 2, 5, 8
X = jnp.ones((B, T, D), jnp.float32)
IDS = jnp.zeros((B, T), jnp.int32)


def by_path(model, sample, **kw):
    return {i.dotted: i for i in wdmask.describe(model, sample, **kw)}


def decays(inv, rules=presets.standard):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {".".join(p): d.multiplier != 0 for p, d in decide(list(inv.values()), rules).items()}


def usage(fn, params):
    return {".".join(k): [u.usage for u in v] for k, v in trace_usage(fn, params).items()}


# --- the generic entry point ---------------------------------------------------------------------


def test_trace_usage_plain_function():
    params = {"w": jnp.ones((D, 4)), "b": jnp.ones(4), "g": jnp.ones(4), "pos": jnp.ones((1, T, D)),
              "tok": jnp.ones((10, D)), "A_log": jnp.ones(D), "unused": jnp.ones(3)}

    def fn(p):
        h = p["tok"][IDS] + p["pos"]  # token lookup, a position table added whole
        h = h * -jnp.exp(p["A_log"])  # elementwise before meeting activations
        return (h @ p["w"] + p["b"]) * p["g"]

    assert usage(fn, params) == {"A_log": ["elementwise"], "b": ["add"], "g": ["mul"], "pos": ["gather_pos"],
                                 "tok": ["gather_data"], "unused": ["unused"], "w": ["contract"]}


def test_trace_usage_is_abstract():
    big = {"w": jax.ShapeDtypeStruct((50_000, 50_000), jnp.float32)}  # 10 GB if materialized
    x = jnp.ones((2, 50_000))  # an input (closed over), not a constant built inside the trace
    assert usage(lambda p: x @ p["w"], big) == {"w": ["contract"]}


def test_token_fed_to_dense_is_activation_kernel_is_contract():
    params = {"latents": jnp.ones((1, 4, D)), "k": jnp.ones((D, D)), "w1": jnp.ones((D, 3)), "w2": jnp.ones((3, D))}

    def fn(p):
        lat = jnp.broadcast_to(p["latents"], (B, 4, D))  # broadcast to the batch: activations
        q = lat @ p["k"]  # both operands parameter-only: the broadcast one is the activation
        return jnp.einsum("bnd,btd->bnt", q, X) + (X @ (p["w1"] @ p["w2"])).sum()  # low-rank: both kernels

    assert usage(fn, params) == {"k": ["contract"], "latents": ["concat"], "w1": ["contract"],
                                 "w2": ["contract"]}


def test_usage_is_followed_into_sub_jaxprs():
    params = {"w": jnp.ones((D, D)), "stack": jnp.ones((3, D, D)), "g": jnp.ones(D), "b": jnp.ones(D),
              "scan_w": jnp.ones((3, D, D)), "c": jnp.ones(D)}

    @jax.custom_jvp
    def scale(x, g):
        return x * g

    scale.defjvp(lambda primals, tangents: (scale(*primals), tangents[0] * primals[1]))

    def fn(p):
        h = jax.checkpoint(lambda h, w: jax.jit(lambda a, b: a @ b)(h, w))(X, p["w"])
        h = jax.lax.fori_loop(0, 3, lambda i, h: h @ p["stack"][i], h)  # a stacked weight sliced by the counter
        h = jax.lax.cond(h.sum() > 0, lambda h: scale(h, p["g"]), lambda h: h + p["b"], h)
        h, _ = jax.lax.scan(lambda h, w: (h @ w, None), h, p["scan_w"])  # enters the body as an xs slice
        return h * jax.nn.softplus(p["c"])  # softplus: elementwise before meeting the activations

    assert usage(fn, params) == {"b": ["add"], "c": ["elementwise"], "g": ["mul"], "scan_w": ["contract"],
                                 "stack": ["contract"], "w": ["contract"]}


class SetupNamed(nn.Module):
    def setup(self):
        self.conv = nn.Conv(4, (3, 3), use_bias=False)
        self.bn1 = nn.BatchNorm(use_running_average=True)
        self.proj = nn.Dense(3)

    def __call__(self, x):
        return self.proj(self.bn1(self.conv(x)).mean((1, 2)))


def test_explicitly_named_setup_modules():
    by = by_path(SetupNamed(), jnp.ones((2, 6, 6, 3), jnp.float32))
    got = {k: (i.layer, i.role, i.source, i.feeds_norm) for k, i in by.items()}
    assert got == {"conv.kernel": ("conv", "kernel", "graph", True), "bn1.scale": ("norm.batch", "scale", "graph", False),
                   "bn1.bias": ("norm.batch", "bias", "graph", False),
                   "proj.kernel": ("linear", "kernel", "graph", False), "proj.bias": ("linear", "bias", "graph", False)}
    assert decays(by) == {"conv.kernel": True, "bn1.scale": False, "bn1.bias": False, "proj.kernel": True,
                          "proj.bias": False}


def test_bias_of_dense_general_is_add_not_position():
    m = nn.DenseGeneral((2, 4))
    v = jax.eval_shape(m.init, jax.random.key(0), X)
    got = usage(lambda p: m.apply({"params": p}, X), v["params"])
    assert got == {"bias": ["add"], "kernel": ["contract"]}  # (heads, head_dim) bias: 2 non-singleton axes


# --- linen models ---------------------------------------------------------------------------------


class Odd(nn.Module):
    """A custom norm whose class name says nothing: normalize by RMS, then multiply by `w`."""

    @nn.compact
    def __call__(self, x):
        w = self.param("w", nn.initializers.ones, (x.shape[-1],))
        return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6) * w


class Zoo(nn.Module):
    @nn.compact
    def __call__(self, ids, train):
        emb = nn.Embed(32, D, name="wte")
        h = emb(ids)
        h = h + self.param("pos_table", nn.initializers.zeros, (1, T, D))  # added whole
        pos = self.param("wpe2", nn.initializers.zeros, (16, D))
        h = h + pos[jnp.arange(T)]  # indexed by arange
        cls = self.param("cls", nn.initializers.zeros, (1, 1, D))
        h = jnp.concatenate([jnp.broadcast_to(cls, (B, 1, D)), h], axis=1)
        probe = self.param("probe", nn.initializers.zeros, (1, 2, D))
        p = nn.Dense(D, name="q")(jnp.broadcast_to(probe, (B, 2, D)))  # a probe fed as activations
        h = jnp.concatenate([p, h], axis=1)
        h = nn.Einsum((D, 4, D), "btd,dhk->bthk", name="attn")(h).sum(2)
        h = nn.BatchNorm(use_running_average=not train, name="bn1")(h)
        h = nn.Dense(D, name="proj")(h)
        experts = self.param("experts", nn.initializers.lecun_normal(), (3, D, D))
        h = jnp.einsum("btd,edf->btf", h, experts)
        h = h * self.param("lambda1", nn.initializers.ones, (D,))
        a_log = self.param("A_log", nn.initializers.zeros, (D,))
        h = h * -jnp.exp(a_log)
        h = Odd(name="whiten")(h)
        if train:
            h = nn.Dropout(0.1, deterministic=False)(h)
        return emb.attend(h)


LINEN_EXPECTED = {  # path: (role, decayed by standard)
    "wte.embedding": ("embedding", True),  # gathered by the ids and used by attend (tied)
    "pos_table": ("position", False), "wpe2": ("position", False),
    "cls": ("token", False), "probe": ("token", False),
    "q.kernel": ("kernel", True), "q.bias": ("bias", False),
    "attn.kernel": ("kernel", True), "attn.bias": ("bias", False),
    "bn1.scale": ("scale", False), "bn1.bias": ("bias", False),
    "proj.kernel": ("kernel", True), "proj.bias": ("bias", False),
    "experts": ("kernel", True),
    "lambda1": ("gain", False), "A_log": ("elementwise", False),
    "whiten.w": ("scale", False),
}


@pytest.fixture(scope="module")
def zoo():
    return by_path(Zoo(), (IDS, False))


def test_linen_roles_from_usage(zoo):
    assert {k: i.role for k, i in zoo.items()} == {k: v[0] for k, v in LINEN_EXPECTED.items()}
    assert decays(zoo) == {k: v[1] for k, v in LINEN_EXPECTED.items()}
    assert all(i.source == "graph" for i in zoo.values())
    assert zoo["attn.kernel"].layer == "linear" and zoo["bn1.scale"].layer == "norm.batch"
    assert zoo["whiten.w"].layer.startswith("norm.")  # recognised as a norm by its graph, not its name
    assert zoo["wte.embedding"].usage == ("gather_data", "contract")
    assert zoo["experts"].usage == ("contract",)


def test_static_sample_arguments_and_kwargs():
    class Flagged(nn.Module):
        @nn.compact
        def __call__(self, x, train, *, mode="a"):
            assert isinstance(train, bool) and mode == "b"  # static, never a tracer
            return nn.Dense(3)(x) if train else nn.Dense(3)(x) * 2

    inv = wdmask.describe(Flagged(), (X, False), sample_kwargs={"mode": "b"})
    assert [(i.dotted, i.role) for i in inv] == [("Dense_0.bias", "bias"), ("Dense_0.kernel", "kernel")]
    by = by_path(Zoo(), (IDS,), sample_kwargs={"train": False})
    assert {k: i.role for k, i in by.items()} == {k: v[0] for k, v in LINEN_EXPECTED.items()}
    params = jax.eval_shape(lambda k: Zoo().init(k, IDS, False), jax.random.key(0))["params"]
    m = wdmask.mask(params, presets.standard, model=Zoo(), sample=(IDS,), sample_kwargs={"train": False})
    assert m["cls"] is False and m["experts"] is True and m["whiten"]["w"] is False
    rows = {r.path: r for r in wdmask.explain(Zoo(), presets.standard, sample=(IDS, False))}
    assert rows["lambda1"].multiplier == 0.0 and rows["attn.kernel"].source == "graph"


def test_without_sample_unknown_names_are_reported():
    params = jax.eval_shape(lambda k: Zoo().init(k, IDS, False), jax.random.key(0))["params"]
    with pytest.warns(wdmask.UnclassifiedWarning) as record:
        wdmask.mask(params, presets.standard)
    text = " ".join(str(w.message) for w in record)
    for name in ("experts", "A_log", "lambda1", "probe", "whiten.w"):  # names can't tell these
        assert name in text


class ScanBlock(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        y = nn.LayerNorm(name="ln")(x)
        y = nn.Dense(D, name="fc")(y)
        return x + y * self.param("gamma_ls", nn.initializers.ones, (D,)), None


class Scanned(nn.Module):
    @nn.compact
    def __call__(self, x):
        stack = nn.scan(ScanBlock, variable_axes={"params": 0}, split_rngs={"params": True}, length=3)
        x, _ = stack(name="layers")(x, None)
        return x


def test_nn_scan_block_usage_through_the_body():
    by = by_path(Scanned(), X.astype(jnp.float64))  # the tests run with x64: params are float64
    got = {k: (i.role, i.stacked, i.source) for k, i in by.items()}
    assert got == {"layers.fc.kernel": ("kernel", 1, "graph"), "layers.fc.bias": ("bias", 1, "graph"),
                   "layers.ln.scale": ("scale", 1, "graph"), "layers.ln.bias": ("bias", 1, "graph"),
                   "layers.gamma_ls": ("gain", 1, "graph")}
    assert decays(by) == {"layers.fc.kernel": True, "layers.fc.bias": False, "layers.ln.scale": False,
                          "layers.ln.bias": False, "layers.gamma_ls": False}


# --- NNX ------------------------------------------------------------------------------------------


class NnxOdd(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.ones(D))

    def __call__(self, x):
        return x / jnp.sqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6) * self.w


class NnxZoo(nnx.Module):
    def __init__(self, rngs):
        self.wte = nnx.Embed(32, D, rngs=rngs)
        self.pos_table = nnx.Param(jnp.zeros((1, T, D)))
        self.wpe2 = nnx.Param(jnp.zeros((16, D)))
        self.latents = nnx.Param(jnp.zeros((1, 2, D)))
        self.q = nnx.Linear(D, D, rngs=rngs)
        self.attn = nnx.Einsum("btd,dhk->bthk", (D, 4, D), rngs=rngs)
        self.bn1 = nnx.BatchNorm(D, rngs=rngs)
        self.proj = nnx.Linear(D, D, rngs=rngs)
        self.experts = nnx.Param(jnp.ones((3, D, D)))
        self.lambda1 = nnx.Param(jnp.ones(D))
        self.A_log = nnx.Param(jnp.zeros(D))
        self.whiten = NnxOdd()

    def __call__(self, ids, train=True):
        assert isinstance(train, bool)
        h = self.wte(ids) + self.pos_table + self.wpe2[jnp.arange(T)]
        lat = self.q(jnp.broadcast_to(self.latents, (B, 2, D)))
        h = jnp.concatenate([lat, h], axis=1)
        h = self.attn(h).sum(2)
        h = self.bn1(h, use_running_average=not train)
        h = self.proj(h)
        h = jnp.einsum("btd,edf->btf", h, self.experts) * self.lambda1 * -jnp.exp(self.A_log)
        return self.wte.attend(self.whiten(h))


NNX_EXPECTED = {
    "wte.embedding": ("embedding", True), "pos_table": ("position", False), "wpe2": ("position", False),
    "latents": ("token", False), "q.kernel": ("kernel", True), "q.bias": ("bias", False),
    "attn.kernel": ("kernel", True),  # nnx.Einsum has no bias by default
    "bn1.scale": ("scale", False), "bn1.bias": ("bias", False),
    "proj.kernel": ("kernel", True), "proj.bias": ("bias", False), "experts": ("kernel", True),
    "lambda1": ("gain", False), "A_log": ("elementwise", False), "whiten.w": ("scale", False),
}


def test_nnx_roles_from_usage_with_static_sample():
    model = nnx.eval_shape(lambda: NnxZoo(nnx.Rngs(0)))  # shapes suffice: describe traces abstractly
    by = by_path(model, (IDS, False))
    assert {k: i.role for k, i in by.items()} == {k: v[0] for k, v in NNX_EXPECTED.items()}
    assert decays(by) == {k: v[1] for k, v in NNX_EXPECTED.items()}
    assert by["attn.kernel"].source == "graph" and by["attn.kernel"].layer == "linear"
    assert by["proj.kernel"].feeds_norm is False and by["q.kernel"].feeds_norm is False
    kw = by_path(model, IDS, sample_kwargs={"train": False})
    assert {k: i.role for k, i in kw.items()} == {k: i.role for k, i in by.items()}


def test_nnx_without_sample_keeps_class_evidence_and_reports_unknowns():
    model = nnx.eval_shape(lambda: NnxZoo(nnx.Rngs(0)))  # shapes suffice: describe traces abstractly
    inv = wdmask.describe(model)
    assert all(i.source != "graph" and i.feeds_norm is None for i in inv)
    with pytest.warns(wdmask.UnclassifiedWarning) as record:
        decide(inv, presets.standard)
    text = " ".join(str(w.message) for w in record)
    for name in ("experts", "A_log", "lambda1", "latents", "wpe2"):
        assert name in text


def test_nnx_feeds_norm_matches_torch_resnet():
    torch = pytest.importorskip("torch")
    import wdmask_torch.models as tm
    from wdmask.models import nnx_resnet18

    t = tm.resnet18(num_classes=10, width=8, layers=(1, 1, 1, 1))
    # abstract leaves (shapes only): describe and compare trace the forward pass, nothing is initialised
    f = nnx.eval_shape(lambda: nnx_resnet18(num_classes=10, width=8, layers=(1, 1, 1, 1), rngs=nnx.Rngs(0)))
    x = jnp.zeros((2, 16, 16, 3), jnp.float32)
    inv = {i.dotted: i for i in wdmask.describe(f, x)}
    # torch's answer, stated from the architecture: every conv feeds its BatchNorm, fc feeds nothing
    assert {k: i.feeds_norm for k, i in inv.items() if i.layer in ("conv", "linear")} == {
        k: not k.startswith("fc.") for k, i in inv.items() if i.layer in ("conv", "linear")}
    assert wdmask.compare(t, f, presets.standard_scale_invariant, sample=x,
                          example_inputs=torch.zeros(2, 3, 16, 16)) == []


# --- one resolver (issues 22, 23): the torch twins are in tests/torch/test_usage.py ------------------------


def test_reparametrized_kernel_and_threshold_agree_with_torch():
    params = {"w": jnp.ones((D, D)), "tau": jnp.ones(D)}
    assert usage(lambda p: jnp.maximum(X @ jnp.exp(p["w"]), p["tau"]), params) == {"tau": ["add"], "w": ["contract"]}


def test_multiply_then_sum_over_the_parameter_axis_is_a_contraction():
    x = jnp.ones((B, T, 3, D))  # (batch, time, window, features): RecurrentGemma's Conv1D
    params = {"w": jnp.ones((3, D)), "g": jnp.ones(D)}
    assert usage(lambda p: (x * p["w"]).sum(2) * p["g"], params) == {"g": ["mul"], "w": ["contract"]}


class PositionsAsInput(nn.Module):  # Transformers-style Flax: position_ids computed by the caller
    @nn.compact
    def __call__(self, ids, position_ids):
        return nn.Embed(50, D, name="wte")(ids) + nn.Embed(16, D, name="wpe")(position_ids)


def test_position_ids_passed_as_an_input_are_positions():
    ids = jnp.array([[3, 9, 4, 1], [7, 7, 2, 0]])
    positions = jnp.arange(4)[None] + jnp.array([[0], [2]])
    with pytest.warns(UserWarning, match=r"sample array 1 as position ids"):
        inv = by_path(PositionsAsInput(), (ids, positions))
    assert {k: (i.role, i.usage) for k, i in inv.items()} == {
        "wte.embedding": ("embedding", ("gather_data",)), "wpe.embedding": ("position", ("gather_pos",))}


def test_abstract_integer_inputs_make_the_table_reading_a_guess():
    ids = jax.ShapeDtypeStruct((2, 4), jnp.int32)
    with pytest.warns(wdmask.UnclassifiedWarning, match=r"wpe\.embedding.*abstract integer input"):
        by_path(PositionsAsInput(), (ids, ids))


class MapHead(nn.Module):  # big_vision's MAP head: a learned probe queried against the tokens
    @nn.compact
    def __call__(self, x):
        probe = self.param("probe", nn.initializers.zeros, (1, 1, D))
        probe = jnp.tile(probe, [x.shape[0], 1, 1])
        return nn.MultiHeadDotProductAttention(num_heads=2)(probe, x)


def test_batch_of_one_gives_the_answers_of_a_batch_of_two():
    one, two = by_path(MapHead(), jnp.ones((1, T, D))), by_path(MapHead(), jnp.ones((2, T, D)))
    assert {k: (i.role, i.usage) for k, i in one.items()} == {k: (i.role, i.usage) for k, i in two.items()}
    assert (one["probe"].role, one["probe"].usage) == ("token", ("concat",))


# ---------------------------------------------------------------------------------- the same patterns in NNX


class NnxPositionsAsInput(nnx.Module):
    def __init__(self, rngs):
        self.wte = nnx.Embed(50, D, rngs=rngs)
        self.wpe = nnx.Embed(16, D, rngs=rngs)

    def __call__(self, ids, position_ids):
        return self.wte(ids) + self.wpe(position_ids)


def test_nnx_position_ids_passed_as_an_input_are_positions():
    model = nnx.eval_shape(lambda: NnxPositionsAsInput(nnx.Rngs(0)))
    ids = jnp.array([[3, 9, 4, 1], [7, 7, 2, 0]])
    positions = jnp.arange(4)[None] + jnp.array([[0], [2]])
    with pytest.warns(UserWarning, match=r"sample array 1 as position ids"):
        inv = by_path(model, (ids, positions))
    assert {k: (i.role, i.usage) for k, i in inv.items()} == {
        "wte.embedding": ("embedding", ("gather_data",)), "wpe.embedding": ("position", ("gather_pos",))}


class NnxMapHead(nnx.Module):  # the MAP head in NNX: a learned probe queried against the tokens
    def __init__(self, rngs):
        self.probe = nnx.Param(jnp.zeros((1, 1, D)))
        self.attn = nnx.MultiHeadAttention(2, D, decode=False, rngs=rngs)

    def __call__(self, x):
        return self.attn(jnp.tile(self.probe[...], [x.shape[0], 1, 1]), x, x)


def test_nnx_batch_of_one_gives_the_answers_of_a_batch_of_two():
    model = nnx.eval_shape(lambda: NnxMapHead(nnx.Rngs(0)))
    one, two = by_path(model, jnp.ones((1, T, D))), by_path(model, jnp.ones((2, T, D)))
    assert {k: (i.role, i.usage) for k, i in one.items()} == {k: (i.role, i.usage) for k, i in two.items()}
    assert (one["probe"].role, one["probe"].usage) == ("token", ("concat",))
    assert one["attn.query.bias"].role == "bias" and one["attn.query.kernel"].role == "kernel"


class NnxTemporalConv(nnx.Module):  # RecurrentGemma's Conv1D in NNX: (x * w).sum(window)
    def __init__(self):
        self.w = nnx.Param(jnp.ones((3, D)))

    def __call__(self, x):
        windows = jnp.stack([x, jnp.roll(x, 1, axis=1), jnp.roll(x, 2, axis=1)], axis=2)  # (B, T, 3, D)
        return (windows * self.w[...]).sum(2)


def test_nnx_multiply_then_sum_over_the_parameter_axis_is_a_contraction():
    inv = by_path(NnxTemporalConv(), jnp.ones((B, T, D)))
    assert (inv["w"].role, inv["w"].usage) == ("kernel", ("contract",))
