"""wdmask_torch: apply wdmask rules to PyTorch optimizers (param groups, audit, rule inference).

Examples:
  >>> import torch, wdmask_torch
  >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
  >>> opt = torch.optim.SGD(wdmask_torch.groups(net), lr=0.1, weight_decay=1e-4)
  >>> [(g["weight_decay"], len(g["params"])) for g in opt.param_groups]
  [(0.0, 3), (0.0001, 1)]
  >>> [[n for n, _ in g["params"]] for g in wdmask_torch.groups(net, named=True)]  # torch >= 2.6
  [['0.bias', '1.weight', '1.bias'], ['0.weight']]
"""

from wdmask._optional import require as _require

_require("torch", by="import wdmask_torch")

from wdmask_torch._apply import call_order as call_order
from wdmask_torch._apply import groups as groups
from wdmask_torch._audit import AuditReport as AuditReport
from wdmask_torch._audit import AuditRow as AuditRow
from wdmask_torch._audit import audit as audit
from wdmask_torch._describe import describe as describe
from wdmask_torch._describe import register_norm as register_norm
from wdmask_torch._describe import unregister_norm as unregister_norm
from wdmask_torch._describe import unwrap as unwrap
from wdmask_torch._infer import infer_rules as infer_rules
from wdmask_torch._optimizers import Optimizers as Optimizers
from wdmask_torch._optimizers import Rerouted as Rerouted
from wdmask_torch._optimizers import optimizers as optimizers

__all__ = ("AuditReport", "AuditRow", "Optimizers", "Rerouted", "audit", "call_order", "describe", "groups",
           "infer_rules", "optimizers", "register_norm", "unregister_norm", "unwrap")

#: Migration, porting and schedules need both frameworks: they live in the cross-framework room
#: (``wdmask_migrate``); these names load it on first use, so the adapter imports neither it nor JAX.
_MIGRATION = ("from_flax", "group_chains", "to_flax", "to_optax", "to_optax_schedule")


def __getattr__(name: str) -> object:
    if name in _MIGRATION:
        import wdmask_migrate

        return getattr(wdmask_migrate, name)
    raise AttributeError(f"module 'wdmask_torch' has no attribute {name!r}")

