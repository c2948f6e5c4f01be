"""Ready-made rule sets: one ``Rules`` constant per preset.

``standard`` is the principled default. The anchor presets (``timm``, ``hf``, ``mingpt``,
``nanogpt``, ``torchvision``, ``detectron2``) reproduce what that code base's own grouping
function does, quirks included, so a migrated training script keeps its behaviour.

Examples:
  >>> from wdmask import presets
  >>> [r.to_dict()["decay"] for r in presets.standard], presets.names[:3]
  ([False, False, False, False, False], ('standard', 'standard_scale_invariant', 'all'))
"""

from __future__ import annotations

import re

from wdmask._rules import Rule, Rules

__all__ = [
    "TORCHVISION_EMBEDDING_KEYS", "all", "by_name", "detectron2", "detectron2_rules", "hf", "layer_decay", "mingpt",
    "muon", "names", "nanogpt", "standard", "standard_scale_invariant", "timm", "torchvision", "torchvision_rules",
]

_NORM = Rule(layer="norm", decay=False, why="norm scale/shift: decay drives them to 0", optional=True)
_SCALE = Rule(role="scale", decay=False, why="a norm gain named `scale` outside a known norm layer (Flax names)",
              optional=True)
_BIAS = Rule(role="bias", decay=False, why="biases: decay is pointless", optional=True)
_GAINS = Rule(role=["gain", "position", "token", "elementwise"], decay=False,
              why="not a linear map (gain, position table, token, elementwise-only)",
              optional=True)
_DECLARED = Rule(declared="no_decay", decay=False, why="declared by the model (no_weight_decay, no_decay)",
                 optional=True)

#: No decay for every norm parameter (BatchNorm/LayerNorm/GroupNorm/InstanceNorm/RMSNorm scale and shift),
#: every bias, the norm-like parameters real models add (layer scales and residual gains, position
#: embeddings and bias tables, cls/distillation/register tokens), and whatever the model declares
#: (timm ``no_weight_decay()``/``no_weight_decay_keywords()``, ``p._no_weight_decay``,
#: ``wdmask.no_decay``): a model author's explicit declaration is honoured. Kernels and token
#: embeddings are decayed.
standard = Rules([_SCALE, _NORM, _BIAS, _GAINS, _DECLARED], name="standard")

#: ``standard`` plus no decay for conv/linear weights whose output goes straight into a norm: the
#: output is invariant to their scale, so decay only raises the effective learning rate
#: (Zhang et al. 2018). Needs a graph: describe with ``example_inputs=`` (torch) or ``sample=`` (Flax).
standard_scale_invariant = Rules(
    [_SCALE, _NORM, _BIAS, _GAINS, _DECLARED,
     Rule(feeds_norm=True, decay=False, why="feeds a norm: scale-invariant", optional=True)],
    name="standard_scale_invariant",
)

#: Decay everything: what a plain ``weight_decay=`` on ``model.parameters()`` does in torch.
all = Rules([], name="all")  # noqa: A001 - the preset's name

#: timm ``create_optimizer_v2`` / ``param_groups_weight_decay``: no decay when ``param.ndim <= 1``, the
#: name ends with ``.bias``, or the model declares it (``declared="no_decay"``: timm's
#: ``model.no_weight_decay()`` names and ``fnmatch`` patterns, exactly as timm matches them). Quirks kept:
#: a 2-D+ norm-like parameter (ConvNeXt layer scale (C, 1, 1), ResMLP ``Affine`` alpha/beta (1, 1, C),
#: a relative position bias table, a ``ScaledStdConv2d`` gain (C, 1, 1, 1)) is decayed unless declared;
#: every 1-D parameter is not. wdmask's declarations also cover ``no_weight_decay_keywords()`` (the Swin /
#: Microsoft training scripts built on timm's rule), module-name entries and ``p._no_weight_decay``, which
#: timm's own factory ignores: see the README's presets section.
timm = Rules(
    [
        Rule(ndim="<=1", decay=False, why="timm: ndim <= 1", optional=True),
        Rule(regex=r".*\.bias", decay=False, why="timm: name ends with .bias", optional=True),
        Rule(declared="no_decay", decay=False, why="timm: model.no_weight_decay()", optional=True),
    ],
    name="timm",
)

#: Hugging Face ``Trainer.get_decay_parameter_names`` (transformers >= 4.48): no decay for parameters
#: inside an ``nn.LayerNorm`` (by type, subclasses included) or whose lower-cased full name contains
#: ``bias``, ``layernorm``, ``rmsnorm``, a segment ``norm`` or a segment ending in ``_norm``. Quirks kept:
#: BatchNorm/GroupNorm/RMSNorm weights are decayed unless their names say "norm" (``bn1.weight`` is
#: decayed); any name with "bias" is not (``relative_position_bias_table``); position embeddings, tokens
#: and layer scales are decayed; model declarations are ignored.
hf = Rules(
    [
        Rule(layer="norm.layer", decay=False, why="hf: inside a LayerNorm", optional=True),
        Rule(regex=r"(?i).*(bias|layernorm|rmsnorm).*", decay=False, why="hf: name has bias/layernorm/rmsnorm",
             optional=True),
        Rule(regex=r"(?i)(.*\.)?norm(\..*)?", decay=False, why="hf: a `norm` segment", optional=True),
        Rule(regex=r"(?i).*_norm(\..*)?", decay=False, why="hf: a `*_norm` segment", optional=True),
    ],
    name="hf",
)

#: minGPT ``configure_optimizers``: decay only the weights of ``Linear`` layers; biases and
#: LayerNorm/Embedding weights are not decayed. Where minGPT stops with "parameters ... were not
#: separated into either decay/no_decay set" (a loose ``nn.Parameter`` other than its ``pos_emb``, an RMSNorm,
#: a tied embedding), this preset says no decay; conv and HF ``Conv1D`` kernels (Linear-like) decay.
mingpt = Rules(
    [
        Rule(decay=False, why="mingpt: not a Linear/Conv weight"),
        Rule(layer=["linear", "conv"], role="kernel", decay=True, why="mingpt: Linear/Conv weight", optional=True),
    ],
    name="mingpt",
)

#: nanoGPT ``configure_optimizers``: decay every parameter with ``dim() >= 2`` (matmul weights and
#: embeddings), nothing 1-D. Per-layer rank is used, so scan-stacked leaves count as in torch.
nanogpt = Rules([Rule(ndim="<2", decay=False, why="nanogpt: dim < 2", optional=True)], name="nanogpt")

# torchvision's and detectron2's norm classes: _BatchNorm, LayerNorm, GroupNorm, _InstanceNorm (and
# LocalResponseNorm, which has no parameters). RMSNorm is not among them: its weight is decayed.
_TV_NORMS = ("norm.batch", "norm.layer", "norm.group", "norm.instance")
#: torchvision's ``--transformer-embedding-decay`` custom keys (parameter names, not paths).
TORCHVISION_EMBEDDING_KEYS: tuple[str, ...] = ("class_token", "position_embedding", "relative_position_bias_table")


def _leaf_named(names: str | tuple[str, ...]) -> str:
    names = (names,) if isinstance(names, str) else names
    return r"(.*\.)?(" + "|".join(re.escape(n) for n in names) + ")"


def torchvision_rules(norm_multiplier: float = 0.0, bias_multiplier: float | None = None,
                      embedding_multiplier: float | None = None) -> Rules:
    """torchvision references' ``set_weight_decay``: every parameter owned directly by a norm layer
    (``_BatchNorm``, ``LayerNorm``, ``GroupNorm``, ``_InstanceNorm`` and subclasses; not ``RMSNorm``)
    gets ``norm_weight_decay`` (here ``norm_multiplier`` x weight_decay); custom keys override it:
    ``bias_multiplier`` for every parameter named ``bias`` (``--bias-weight-decay``),
    ``embedding_multiplier`` for ``class_token``, ``position_embedding`` and
    ``relative_position_bias_table`` (``--transformer-embedding-decay``).

    Examples:
      >>> torchvision_rules(0.0, 0.5)[1].multiplier
      0.5
    """
    rules = [Rule(layer=list(_TV_NORMS), multiplier=norm_multiplier, why="torchvision: norm_weight_decay",
                  optional=True)]
    if bias_multiplier is not None:
        rules.append(Rule(regex=_leaf_named("bias"), multiplier=bias_multiplier, why="torchvision: custom key 'bias'",
                          optional=True))
    if embedding_multiplier is not None:
        rules.append(Rule(regex=_leaf_named(TORCHVISION_EMBEDDING_KEYS), multiplier=embedding_multiplier,
                          why="torchvision: transformer_embedding_decay", optional=True))
    return Rules(rules, name="torchvision")


def detectron2_rules(norm_multiplier: float = 0.0, bias_multiplier: float | None = None,
                     overrides: dict[str, float] | None = None) -> Rules:
    """detectron2 ``get_default_optimizer_params``: parameters owned directly by a norm layer
    (BatchNorm1-3d, SyncBatchNorm, GroupNorm, InstanceNorm1-3d, LayerNorm and subclasses; not
    detectron2's own ``LayerNorm`` class nor RMSNorm) get ``WEIGHT_DECAY_NORM`` (default 0); with
    ``WEIGHT_DECAY_BIAS`` set, every parameter named ``bias`` (norm β included: overrides are applied
    last) gets it; ``overrides`` maps further parameter names to multipliers (the ``overrides``
    argument, e.g. ViTDet's ``{"pos_embed": 0.0}``).

    Examples:
      >>> len(detectron2_rules()), len(detectron2_rules(overrides={"pos_embed": 0.0}))
      (1, 2)
    """
    rules = [Rule(layer=list(_TV_NORMS), multiplier=norm_multiplier, why="detectron2: WEIGHT_DECAY_NORM",
                  optional=True)]
    if bias_multiplier is not None:
        rules.append(Rule(regex=_leaf_named("bias"), multiplier=bias_multiplier, why="detectron2: WEIGHT_DECAY_BIAS",
                          optional=True))
    for name, m in (overrides or {}).items():
        rules.append(Rule(regex=_leaf_named(name), multiplier=m, why=f"detectron2: overrides[{name!r}]",
                          optional=True))
    return Rules(rules, name="detectron2")


#: ``torchvision_rules()`` with ``norm_weight_decay=0``: norm parameters not decayed, biases decayed.
torchvision = torchvision_rules()
#: ``detectron2_rules()`` with its config defaults (``WEIGHT_DECAY_NORM=0``, ``WEIGHT_DECAY_BIAS=None``).
detectron2 = detectron2_rules()

def layer_decay(decay: float) -> Rules:
    r"""Layer-wise learning-rate decay: every parameter's lr multiplier is ``decay ** (depth_max - depth)``.

    ``depth`` is 0 before the first repeated block (stem, patch/token embeddings, cls and position tables),
    ``i`` in block ``i`` in forward order and ``depth_max`` after the last (final norm, head), so on a ViT this is
    MAE/BEiT's ``param_groups_lrd`` (``get_layer_id_for_vit``); blocks are found from structure (``blocks.N``,
    ``layers.N``, ``encoder.layer.N``, ``h.N``, stages of blocks, scan-stacked layers: one multiplier per slice).
    It sets only the learning rate: compose it with a weight-decay preset, ``standard + layer_decay(0.75)``.

    Examples:
      >>> from wdmask import ParamInfo, decide, presets
      >>> inv = [ParamInfo(tuple(p.split(".")), (4, 4), layer="linear", role="kernel")
      ...        for p in ("embed.weight", "blocks.0.w", "blocks.1.w", "head.w")]
      >>> [round(d.lr, 4) for d in decide(inv, presets.standard + presets.layer_decay(0.5)).values()]
      [0.125, 0.25, 0.5, 1.0]
    """
    from wdmask._errors import RuleError

    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay <= 1:
        raise RuleError(f"layer_decay: `decay` must be a number in (0, 1], got {decay!r}")
    return Rules([Rule(lr_decay=float(decay), why=f"layer-wise lr decay {decay:g}", optional=True)],
                 name=f"layer_decay({decay:g})")


#: Optimizer labels for Muon + AdamW: ``"muon"`` for the kernels of hidden layers (linear/conv kernels that run
#: inside the repeated blocks: attention and MLP projections, fused QKV, expert stacks, convs after the stem),
#: ``"adamw"`` for everything else: token embeddings, the output head (also when tied to the embedding), the
#: stem's first conv, and every parameter ``standard`` does not decay (norms, biases, gains, positions, tokens,
#: declarations). It sets only labels: compose it with a decay preset (``standard + muon``) and apply it with
#: ``wdmask.partition`` / ``wdmask_torch.optimizers``.
muon = Rules(
    [
        Rule(optimizer="adamw", why="muon: not a hidden-layer matrix (AdamW)"),
        Rule(layer=["linear", "conv"], role="kernel", in_block=True, optimizer="muon",
             why="muon: kernel of a hidden layer", optional=True),
        Rule(declared="no_decay", optimizer="adamw", why="muon: declared no_decay (AdamW)", optional=True),
    ],
    name="muon",
)

_BY_NAME = {
    "standard": standard, "standard_scale_invariant": standard_scale_invariant, "all": all, "timm": timm,
    "hf": hf, "mingpt": mingpt, "nanogpt": nanogpt, "torchvision": torchvision, "detectron2": detectron2,
}
#: Names of every preset.
names: tuple[str, ...] = tuple(_BY_NAME)


def by_name(name: str) -> Rules:
    """The preset called ``name``.

    Examples:
      >>> by_name("standard") is standard
      True
    """
    from wdmask._errors import RuleError
    from wdmask._rules import _did_you_mean

    try:
        return _BY_NAME[name]
    except KeyError:
        raise RuleError(f"unknown preset {name!r}; valid: {', '.join(names)}.{_did_you_mean(name, names)}") from None
