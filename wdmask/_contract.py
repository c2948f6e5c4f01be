"""Which kernel axes a layer's forward contracts (reduction) and which it produces (output): the traced
contraction's (``ParamInfo.contract_axes``, read by the adapter's trace), else, for a params pytree described
without a forward pass, layout conventions.

Axes are numbered in the leaf's full shape; stacked axes (``nn.scan``) are neither (Muon treats them as batch).

* Flax ``Dense``/NNX ``Linear`` kernel ``(in, out)``: ``(0,), (1,)``;
* Flax ``Conv`` kernel ``(*window, in, out)``: ``(0, ..., n-2), (n-1,)``;
* torch/equinox ``Linear`` weight ``(out, in)``: ``(1,), (0,)``; ``Conv`` weight ``(out, in, *window)``:
  ``(1, ..., n-1), (0,)``; Hugging Face ``Conv1D`` weight ``(in, out)``: ``(0,), (1,)``.

A linear kernel of more than two per-layer axes (``DenseGeneral``, an expert stack, an einsum kernel) has no
convention: ``None`` (its axes need the traced forward pass).

Examples:
  >>> from wdmask import ParamInfo
  >>> contract_axes(ParamInfo(("layers", "mlp", "kernel"), (4, 8, 16), layer="linear", role="kernel", stacked=1))
  ((1,), (2,))
  >>> contract_axes(ParamInfo(("fc", "weight"), (16, 8), layer="linear", role="kernel"))
  ((1,), (0,))
  >>> contract_axes(ParamInfo(("ens", "kernel"), (3, 4, 8), layer="linear", role="kernel", stacked=1,
  ...                         usage=("contract",), contract_axes=((1,), (0, 2))))
  ((1,), (2,))
"""

from __future__ import annotations

from wdmask._types import ParamInfo

__all__ = ["contract_axes"]

Axes = tuple[tuple[int, ...], tuple[int, ...]]


def contract_axes(info: ParamInfo) -> Axes | None:
    """``info.contract_axes`` when known (its stacked axes dropped: a ``vmap`` over layers whose input is not
    batched contracts them as free axes), else, when no forward pass was traced (``info.usage`` empty), the
    layout convention of its layer (module docstring)."""
    if info.contract_axes is not None:
        red, out = (tuple(a for a in axes if a not in info.stacked_axes) for axes in info.contract_axes)
        return (red, out) if red and out else None
    if info.usage:
        return None  # traced, but its contractions were not read (or disagree): no guess
    if info.role != "kernel" or info.layer not in ("linear", "conv"):
        return None
    per = [a for a in range(len(info.shape)) if a not in info.stacked_axes]
    n = len(per)
    if n < 2:
        return None
    flax_layout = bool(info.path) and info.path[-1] == "kernel"
    if info.layer == "conv":
        if flax_layout:
            return tuple(per[:-1]), (per[-1],)
        return tuple(per[1:]), (per[0],)
    if n != 2:
        return None
    if flax_layout or info.module_type.endswith(".Conv1D"):
        return (per[0],), (per[1],)
    return (per[1],), (per[0],)
