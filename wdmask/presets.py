"""Ready-made rule sets: one ``Rules`` constant per preset.

``standard`` is the principled default. The anchor presets (``timm``, ``hf``, ``mingpt``,
``nanogpt``, ``torchvision``, ``detectron2``) reproduce what that code base's own grouping
function does, quirks included, so a migrated training script keeps its behaviour.

Example:
  >>> from wdmask import presets
  >>> [r.to_dict()["decay"] for r in presets.standard], presets.names[:3]
  ([False, False, False], ('standard', 'standard_scale_invariant', 'all'))
"""

from __future__ import annotations

from wdmask._rules import Rule, Rules

__all__ = [
    "all", "by_name", "detectron2", "detectron2_rules", "hf", "mingpt", "names", "nanogpt", "standard",
    "standard_scale_invariant", "timm", "torchvision", "torchvision_rules",
]

_NORM = Rule(layer="norm", decay=False, why="norm scale/shift: decay drives them to 0", optional=True)
_BIAS = Rule(role="bias", decay=False, why="biases: decay is pointless", optional=True)
_GAINS = Rule(role=["gain", "position", "token"], decay=False,
              why="layer scales/gains, position tables, learned tokens: decay pulls them to 0", optional=True)

#: No decay for every norm parameter (BatchNorm/LayerNorm/GroupNorm/InstanceNorm/RMSNorm scale and shift),
#: every bias, and the norm-like parameters real models add (layer scales and residual gains, position
#: embeddings and bias tables, cls/distillation/register tokens); kernels and token embeddings are decayed.
standard = Rules([_NORM, _BIAS, _GAINS], name="standard")

#: ``standard`` plus no decay for conv/linear weights whose output goes straight into a norm: the
#: output is invariant to their scale, so decay only raises the effective learning rate
#: (Zhang et al. 2018). Needs a graph: describe with ``example_inputs=`` (torch) or ``sample=`` (Flax).
standard_scale_invariant = Rules(
    [_NORM, _BIAS, _GAINS, Rule(feeds_norm=True, decay=False, why="feeds a norm: scale-invariant", optional=True)],
    name="standard_scale_invariant",
)

#: Decay everything: what a plain ``weight_decay=`` on ``model.parameters()`` does in torch.
all = Rules([], name="all")  # noqa: A001 - the preset's name

#: timm ``param_groups_weight_decay``: no decay when ``param.ndim <= 1`` or the name ends with
#: ``.bias``, or the model declares it (``model.no_weight_decay()``). Quirk kept: a 2-D+ norm-like
#: parameter (layer scale of shape (C, 1, 1), ResMLP affine) is decayed; a 1-D embedding-like
#: parameter is not.
timm = Rules(
    [
        Rule(ndim="<=1", decay=False, why="timm: ndim <= 1", optional=True),
        Rule(regex=r".*\.bias", decay=False, why="timm: name ends with .bias", optional=True),
        Rule(declared="no_decay", decay=False, why="timm: model.no_weight_decay()", optional=True),
    ],
    name="timm",
)

#: Hugging Face ``Trainer.get_decay_parameter_names``: no decay for parameters inside an
#: ``nn.LayerNorm`` (by type) or whose lower-cased name contains ``bias``, ``layernorm``,
#: ``rmsnorm``, a segment ``norm`` or a segment ending in ``_norm``. Quirk kept: BatchNorm and
#: GroupNorm weights are decayed unless their names say "norm" (``bn1.weight`` is decayed).
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

#: minGPT ``configure_optimizers``: decay only the weights of ``Linear`` (and conv) layers; biases,
#: norms, embeddings and loose parameters (``pos_emb``) are not decayed.
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


def torchvision_rules(norm_multiplier: float = 0.0, bias_multiplier: float | None = None) -> Rules:
    """torchvision references' ``set_weight_decay``: every parameter owned directly by a norm layer
    gets ``norm_weight_decay`` (here as ``norm_multiplier`` x weight_decay); with ``bias_multiplier``,
    every ``bias`` gets its own (the ``custom_keys_weight_decay=[("bias", ...)]`` option).

    Example:
      >>> torchvision_rules(0.0, 0.5)[1].multiplier
      0.5
    """
    rules = [Rule(layer="norm", multiplier=norm_multiplier, why="torchvision: norm_weight_decay", optional=True)]
    if bias_multiplier is not None:
        rules.append(Rule(regex=r"(.*\.)?bias", multiplier=bias_multiplier, why="torchvision: custom key 'bias'",
                          optional=True))
    return Rules(rules, name="torchvision")


def detectron2_rules(norm_multiplier: float = 0.0, bias_multiplier: float | None = None) -> Rules:
    """detectron2 ``get_default_optimizer_params``: norm layers' parameters get
    ``WEIGHT_DECAY_NORM`` (default 0); with ``WEIGHT_DECAY_BIAS`` set, every parameter named
    ``bias`` (norm β included: the bias override is applied last) gets it.

    Example:
      >>> len(detectron2_rules())
      1
    """
    rules = [Rule(layer="norm", multiplier=norm_multiplier, why="detectron2: WEIGHT_DECAY_NORM", optional=True)]
    if bias_multiplier is not None:
        rules.append(Rule(regex=r"(.*\.)?bias", multiplier=bias_multiplier, why="detectron2: WEIGHT_DECAY_BIAS",
                          optional=True))
    return Rules(rules, name="detectron2")


#: ``torchvision_rules()`` with ``norm_weight_decay=0``: norm parameters not decayed, biases decayed.
torchvision = torchvision_rules()
#: ``detectron2_rules()`` with its config defaults (``WEIGHT_DECAY_NORM=0``, ``WEIGHT_DECAY_BIAS=None``).
detectron2 = detectron2_rules()

_BY_NAME = {
    "standard": standard, "standard_scale_invariant": standard_scale_invariant, "all": all, "timm": timm,
    "hf": hf, "mingpt": mingpt, "nanogpt": nanogpt, "torchvision": torchvision, "detectron2": detectron2,
}
#: Names of every preset.
names: tuple[str, ...] = tuple(_BY_NAME)


def by_name(name: str) -> Rules:
    """The preset called ``name``.

    Example:
      >>> by_name("standard") is standard
      True
    """
    from wdmask._rules import _did_you_mean
    from wdmask._types import RuleError

    try:
        return _BY_NAME[name]
    except KeyError:
        raise RuleError(f"unknown preset {name!r}; valid: {', '.join(names)}.{_did_you_mean(name, names)}") from None
