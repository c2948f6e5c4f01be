"""Name heuristics shared by both adapters: layer kind from a class or auto-name, role from a leaf name.

Adapters call these only when they lack an exact class (``source="name"``); the exact-class
tables stay in each adapter because they name each framework's classes.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# Checked in order: the first pattern found in the lower-cased name wins.
_KIND_PATTERNS: tuple[tuple[str, str], ...] = (
    ("rmsnorm", "norm.rms"),
    ("batchnorm", "norm.batch"),
    ("groupnorm", "norm.group"),
    ("instancenorm", "norm.instance"),
    ("layernorm", "norm.layer"),
    ("convtranspose", "conv"),
    ("conv", "conv"),
    ("densegeneral", "linear"),
    ("dense", "linear"),
    ("linear", "linear"),
    ("embed", "embedding"),
)
_AUTO_NAME = re.compile(r"(?P<cls>[A-Za-z][A-Za-z0-9]*?)_(?P<n>\d+)")
# "Norm" as a word of a CamelCase class name, anywhere: EvoNorm2dB0, FilterResponseNormAct2d, LayerNormFp32,
# T5LayerNorm, ScaleNorm; not Normal / Normalize / Normalization (those are different words).
_NORM_WORD = re.compile(r"Norm(?![a-z])|(?:^|_)norm(?![a-z])")
# ... unless the name says "without a norm" (NF-Nets' NormFreeBlock) or names a container of layers.
_NOT_NORM = re.compile(r"(?i)norm_?(free|less)|no_?norm|(Block|Stage|Head|Net|Model|Mlp|Stem|Encoder|Decoder|"
                       r"Attention|Classifier|Wrapper)s?\d*$")

SCALE_NAMES = frozenset({"scale", "weight", "gamma", "g", "gain"})
SHIFT_NAMES = frozenset({"bias", "beta", "b", "shift", "offset"})
KERNEL_NAMES = frozenset({"kernel", "weight", "w"})
EMBEDDING_NAMES = frozenset({"embedding", "embeddings", "weight"})  # Flax, Haiku, torch
# Learned multipliers that are not a norm's gamma: layer scale (ConvNeXt, timm ls1/ls2, CaiT gamma_1),
# residual/skip gains, ResMLP Affine alpha, weight-standardization gains (ScaledStdConv2d.gain).
_GAIN = re.compile(r"gamma(_\d+)?|layer_?scale(_\w+)?|ls\d?|gain|\w+_gain|alpha|res(idual)?_scale|skip_?gain|"
                   r"logit_scale")
# Absolute/relative position parameters and attention bias tables.
_POSITION = re.compile(r"(absolute_)?pos(ition)?(al)?_?(embed|embedding|embeddings|emb)|\w*relative_position\w*|"
                       r"rel_pos\w*|attention_biases|\w*_bias_table")
# Learned tokens prepended to a sequence.
_TOKEN = re.compile(r"(cls|class|dist|distill|reg|register|mask|query)_?tokens?")
# Owners (attribute names) of an embedding table that holds positions or attention biases: HF
# ``position_embeddings``, GPT-2 ``wpe``, BART ``embed_positions``, T5 ``relative_attention_bias``.
_POSITION_OWNER = re.compile(r"(\w+_)?pos(ition)?(al)?_?(embed|embedding|embeddings|emb)|wpe|embed_positions|"
                             r"(\w+_)?relative_\w+")
# Shift-like leaf names outside norms: ResMLP ``Affine.beta`` (the shift of a norm-free affine).
_SHIFT = frozenset({"beta", "shift"})
# Owners of an embedding table that holds tokens: HF ``word_embeddings``/``embed_tokens``/``wte``, T5 ``shared``.
_TOKEN_OWNER = re.compile(r"(\w+_)?(word|token|tok|vocab)s?_?(embed|embedding|embeddings|emb|embs|embedder|table)|"
                          r"wte|embed_tokens|shared|token_embedder")
# Haiku's module auto-names (the snake_case class name, ``_N`` for the N-th): hk.Linear -> ``linear``,
# hk.Conv2D -> ``conv2_d``, hk.Embed -> ``embed``, hk.LayerNorm -> ``layer_norm`` (leaves w/b, embeddings,
# scale/offset).
_HAIKU_NAME = re.compile(r"(?P<base>linear|(?:depthwise_)?conv[123]_d(?:_transpose)?|embed|layer_norm|batch_norm|"
                         r"group_norm|rms_norm|instance_norm)(?:_\d+)?")
_HAIKU_KINDS = {"linear": "linear", "embed": "embedding", "layer_norm": "norm.layer", "batch_norm": "norm.batch",
                "group_norm": "norm.group", "rms_norm": "norm.rms", "instance_norm": "norm.instance"}
# Words of an explicit module name that say "a norm layer" (``input_layernorm``, ``final_layer_norm``, ``ln_f``,
# ``norm1``, ``q_norm``, Haiku ResNet's ``batchnorm_0``), and which norm; a last word naming a container or "free"
# says it is not one (``norm_block``, ``norm_free``).
_NORM_WORDS = {"norm": "norm.layer", "layernorm": "norm.layer", "ln": "norm.layer", "rmsnorm": "norm.rms",
               "batchnorm": "norm.batch", "groupnorm": "norm.group", "instancenorm": "norm.instance"}
_NORM_QUALIFIERS = {"rms": "norm.rms", "batch": "norm.batch", "group": "norm.group", "instance": "norm.instance"}
_NOT_NORM_LAST = frozenset({"block", "blocks", "stage", "stages", "head", "heads", "net", "model", "mlp", "stem",
                            "encoder", "decoder", "attention", "attn", "classifier", "wrapper", "free", "less",
                            "layers"})


def _is_norm(kind: str) -> bool:
    return kind.startswith("norm.")


#: ``(role, test(kind, leaf, owner))`` in order, the first test that holds decides (leaf and owner lower-cased).
#: Specific names first (tokens, positions, gains), then a norm's own leaves, then what a layer kind says of
#: its leaves, then bare Flax leaf names; ``other`` when nothing holds.
_ROLE_RULES: tuple[tuple[str, Callable[[str, str, str], object]], ...] = (
    ("token", lambda kind, name, own: _TOKEN.fullmatch(name)),
    ("position", lambda kind, name, own: _POSITION.fullmatch(name) or (
        kind == "embedding" and _POSITION_OWNER.fullmatch(own))),
    ("gain", lambda kind, name, own: not _is_norm(kind) and _GAIN.fullmatch(name)),
    ("scale", lambda kind, name, own: _is_norm(kind) and name in SCALE_NAMES),
    ("bias", lambda kind, name, own: _is_norm(kind) and name in SHIFT_NAMES),
    ("other", lambda kind, name, own: _is_norm(kind)),  # a norm's extra leaf (FRN's tau): nothing to say
    ("embedding", lambda kind, name, own: kind == "embedding" and name in EMBEDDING_NAMES),
    ("kernel", lambda kind, name, own: kind in ("conv", "linear") and name in KERNEL_NAMES),
    ("bias", lambda kind, name, own: kind in ("conv", "linear") and name == "b"),  # Haiku's w/b
    ("bias", lambda kind, name, own: name == "bias" or name.endswith("_bias") or name in _SHIFT),
    ("gain", lambda kind, name, own: kind == "other" and own and _GAIN.fullmatch(own) and name in SCALE_NAMES),
    ("kernel", lambda kind, name, own: name == "kernel"),
    ("embedding", lambda kind, name, own: name == "embedding"),
    ("scale", lambda kind, name, own: name == "scale"),  # Flax names every norm's gain `scale`, nothing else
    ("other", lambda kind, name, own: True),
)


def kind_from_name(name: str) -> str | None:
    """Layer kind suggested by a class name or Flax auto-name, or ``None``.

    A name with the word "Norm" anywhere that names no specific norm (``EvoNorm2dB0``,
    ``FilterResponseNormAct2d``) is a norm of unknown statistics: ``norm.layer``; not a name that
    says "norm-free" or ends in a container word (``NormFreeBlock``, ``NormMlpClassifierHead``).

    Examples:
      >>> kind_from_name("BatchNorm_0"), kind_from_name("LayerNorm2d"), kind_from_name("Dense_12")
      ('norm.batch', 'norm.layer', 'linear')
      >>> kind_from_name("EvoNorm2dB0"), kind_from_name("FilterResponseNormAct2d"), kind_from_name("Normalize")
      ('norm.layer', 'norm.layer', None)
      >>> kind_from_name("NormFreeBlock"), kind_from_name("NormMlpClassifierHead")
      (None, None)
      >>> kind_from_name("bn1") is None
      True
    """
    m = _AUTO_NAME.fullmatch(name)
    cls = m.group("cls") if m else name
    lowered = cls.lower()
    for needle, kind in _KIND_PATTERNS:
        if needle in lowered:
            return kind
    if lowered.endswith("norm") or lowered.endswith("norm2d") or (
            _NORM_WORD.search(cls) and not _NOT_NORM.search(cls)):
        return "norm.layer"
    return None


def _words(name: str) -> list[str]:
    """Lower-cased words of a snake_case / CamelCase module name, trailing digits dropped (``ln_1`` -> ``["ln"]``)."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return [w for w in (re.sub(r"\d+$", "", part) for part in re.split(r"[^A-Za-z0-9]+", spaced.lower())) if w]


def kind_from_module_name(name: str) -> str | None:
    """Layer kind an explicit module (attribute) name states by convention, or ``None``.

    Haiku's auto-names (``linear_1``, ``conv2_d``, ``embed``, ``layer_norm``), and names that say "norm"
    (``input_layernorm``, ``post_attention_layernorm``, ``final_layer_norm``, ``ln_f``, ``ln_1``, ``norm1``,
    ``batchnorm_0``): the norm they name, else ``norm.layer``. Other explicit names (``bn1``, ``downsample``,
    ``proj``) say nothing.

    Examples:
      >>> [kind_from_module_name(n) for n in ("linear_1", "conv2_d", "embed", "batch_norm", "rms_norm")]
      ['linear', 'conv', 'embedding', 'norm.batch', 'norm.rms']
      >>> [kind_from_module_name(n) for n in ("input_layernorm", "final_layer_norm", "ln_f", "q_norm", "LayerNorm")]
      ['norm.layer', 'norm.layer', 'norm.layer', 'norm.layer', 'norm.layer']
      >>> [kind_from_module_name(n) for n in ("initial_batchnorm", "bn1", "norm_block", "normalize", "proj")]
      ['norm.batch', None, None, None, None]
    """
    m = _HAIKU_NAME.fullmatch(name)
    if m:
        base = m.group("base")
        return _HAIKU_KINDS.get(base, "conv")
    words = _words(name)
    if not words or words[-1] in _NOT_NORM_LAST:
        return None
    found = [_NORM_WORDS[w] for w in words if w in _NORM_WORDS]
    if not found:
        return None
    specific = [k for k in found if k != "norm.layer"] + [_NORM_QUALIFIERS[w] for w in words if w in _NORM_QUALIFIERS]
    return specific[0] if specific else "norm.layer"


def names_tokens(owner: str) -> bool:
    """Whether an embedding table's owner name says it holds tokens (``word_embeddings``, ``wte``, ``embed_tokens``).

    Examples:
      >>> names_tokens("word_embeddings"), names_tokens("wte"), names_tokens("token_type_embeddings")
      (True, True, False)
    """
    return _TOKEN_OWNER.fullmatch(owner.lower()) is not None


def is_auto_name(name: str) -> bool:
    """Whether ``name`` looks like a Flax auto-name ``ClassName_N``.

    Examples:
      >>> is_auto_name("Conv_3"), is_auto_name("conv1")
      (True, False)
    """
    return _AUTO_NAME.fullmatch(name) is not None and name[0].isupper()


def role_from_name(kind: str, leaf: str, owner: str = "") -> str:
    """Role of a leaf called ``leaf`` in a layer of kind ``kind`` whose attribute name is ``owner``.

    ``owner`` (the owning module's own name, e.g. ``"position_embeddings"`` or ``"ls1"``) decides
    two cases the leaf name cannot: an embedding table that holds positions, and a layer-scale
    module whose parameter is called ``weight``/``scale``.

    Examples:
      >>> role_from_name("norm.batch", "weight"), role_from_name("conv", "weight"), role_from_name("other", "bias")
      ('scale', 'kernel', 'bias')
      >>> role_from_name("other", "pos_embed"), role_from_name("other", "cls_token"), role_from_name("other", "gamma")
      ('position', 'token', 'gain')
      >>> role_from_name("embedding", "weight", owner="position_embeddings"), role_from_name("conv", "gain")
      ('position', 'gain')
      >>> role_from_name("other", "scale", owner="ls1"), role_from_name("other", "beta")
      ('gain', 'bias')
      >>> role_from_name("other", "scale", owner="bn1")  # a Flax norm under an explicit name
      'scale'

    """
    name, own = leaf.lower(), owner.lower()
    return next(role for role, applies in _ROLE_RULES if applies(kind, name, own))
    if kind == "embedding" and name in EMBEDDING_NAMES:
        return "embedding"
    if kind in ("conv", "linear") and name in KERNEL_NAMES:
        return "kernel"
    if name == "bias" or name.endswith("_bias") or name in _SHIFT:
        return "bias"
    if kind == "other" and own and _GAIN.fullmatch(own) and name in SCALE_NAMES:
        return "gain"
    if name == "kernel":
        return "kernel"
    if name == "embedding":
        return "embedding"
    if name == "scale":  # Flax names every norm's gain `scale`; no other Flax layer has one
        return "scale"
    return "other"
