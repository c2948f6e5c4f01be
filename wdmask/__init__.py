"""wdmask: decide, per parameter, whether weight decay applies; apply it in Optax and PyTorch.

The data path is one direction: describe -> decide -> apply.

Examples:
  >>> import wdmask
  >>> inv = [wdmask.ParamInfo(("bn", "scale"), (8,), layer="norm.batch", role="scale")]
  >>> wdmask.decide(inv, wdmask.presets.standard)[("bn", "scale")].multiplier
  0.0
"""

from wdmask import presets as presets
from wdmask._audit import AuditReport as AuditReport
from wdmask._audit import AuditRow as AuditRow
from wdmask._config import dumps as dumps
from wdmask._config import load as load
from wdmask._config import loads as loads
from wdmask._dispatch import compare as compare
from wdmask._dispatch import explain as explain
from wdmask._engine import decide as decide
from wdmask._errors import MaskError as MaskError
from wdmask._errors import RuleError as RuleError
from wdmask._errors import UnclassifiedWarning as UnclassifiedWarning
from wdmask._errors import UnmatchedRuleWarning as UnmatchedRuleWarning
from wdmask._infer import Inferred as Inferred
from wdmask._jax._apply import decay as decay
from wdmask._jax._apply import mask as mask
from wdmask._jax._audit import audit as audit
from wdmask._jax._audit import infer_rules as infer_rules
from wdmask._jax._declare import no_decay as no_decay
from wdmask._jax._describe import describe as describe
from wdmask._jax._policy import labels as labels
from wdmask._jax._policy import lr_scales as lr_scales
from wdmask._jax._policy import muon_dimension_numbers as muon_dimension_numbers
from wdmask._jax._policy import partition as partition
from wdmask._jax._policy import scale_lr as scale_lr
from wdmask._pair import Comparison as Comparison
from wdmask._pair import Difference as Difference
from wdmask._pair import PairError as PairError
from wdmask._pair import pair as pair
from wdmask._recipes import lamb as lamb
from wdmask._recipes import lars as lars
from wdmask._report import Explanation as Explanation
from wdmask._rules import Rule as Rule
from wdmask._rules import Rules as Rules
from wdmask._types import Decision as Decision
from wdmask._types import ParamInfo as ParamInfo

__version__ = "0.1.0"

__all__ = (
    "AuditReport", "AuditRow", "Comparison", "Decision", "Difference", "Explanation", "Inferred", "MaskError",
    "PairError",
    "ParamInfo", "Rule", "RuleError", "Rules", "UnclassifiedWarning", "UnmatchedRuleWarning",
    "audit", "compare", "decay", "decide", "describe", "dumps", "explain", "infer_rules", "labels", "lamb", "lars",
    "load", "loads", "lr_scales", "mask", "muon_dimension_numbers", "no_decay", "pair", "partition", "scale_lr",
    "presets",
)
