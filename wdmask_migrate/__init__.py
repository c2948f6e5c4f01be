"""wdmask_migrate: the cross-framework room — move training code between PyTorch and JAX.

It imports both adapters (``wdmask_torch`` and ``wdmask._jax``; jax and optax only inside its functions);
neither adapter imports it (``wdmask_torch.to_optax`` and the other names below load it on first use).

Examples:
  >>> import wdmask_migrate, wdmask_torch
  >>> wdmask_torch.to_optax is wdmask_migrate.to_optax
  True
"""

from wdmask_migrate._migrate import group_chains as group_chains
from wdmask_migrate._migrate import to_optax as to_optax
from wdmask_migrate._port import from_flax as from_flax
from wdmask_migrate._port import to_flax as to_flax
from wdmask_migrate._schedule import to_optax_schedule as to_optax_schedule

__all__ = ("from_flax", "group_chains", "to_flax", "to_optax", "to_optax_schedule")
