"""The authors' code in one place: the constants of the official `loss.py` and its class names.

Ma et al. trained every published run with HanxunH/Active-Passive-Losses (PyTorch, commit 04bce53),
whose `loss.py` differs from the paper's formulas in a few constants. aplx's defaults are the paper's;
`aplx.losses.get(name, fidelity="authors")` and the authors' class names (`get("NCEandRCE", ...)`) apply
the values below. The experiment configs read them from here too (`fidelity=authors`).

Nothing here computes: this module holds data only and imports nothing from aplx.
"""

from __future__ import annotations

import math

# RCE's A = log 0: the official code clamps the one-hot label to [1e-4, 1], so A = log(1e-4).
AUTHORS_LOG_ZERO = math.log(1e-4)
# The official code clamps p to [1e-7, 1] in RCE, NRCE, SCE's RCE term, GCE and NGCE.
AUTHORS_MIN_PROB = 1e-7

# The options `fidelity="authors"` gives every loss that accepts them (as keyword defaults; a value
# passed to `get` wins). Each line is a difference between the paper and the official `loss.py`.
AUTHORS_LOSS_OPTIONS = {
  "halved": True,  # MAE = 1 - p_y ("reduced MAE"), NMAE = (1 - p_y) / (2 (K - 1)).
  "log_zero": AUTHORS_LOG_ZERO,  # RCE's A.
  "min_prob": AUTHORS_MIN_PROB,  # p clamped to [1e-7, 1] in RCE, NRCE, SCE, GCE, NGCE.
  "detach_focal_factor": True,  # No gradient through any (1 - p)^gamma factor in FL / NFL.
  "authors_normalizer": True,  # NRCE multiplied by `1 / 4 * (K - 1)` (operator precedence).
}


# ----------------------------------------------------------------------------------------------------
# The official `loss.py` classes
# ----------------------------------------------------------------------------------------------------

# Constructor arguments of the official classes that aplx does not take, and what to do instead.
_NOT_TAKEN = {
  "num_classes": "aplx reads K from the logits' class axis; leave num_classes out",
  "size_average": "aplx returns one loss per example; reduce it yourself: .mean() (True) or .sum() (False)",
  "train_loader": (
    "pass the class weights instead: class_weight=aplx.losses.nlnl_class_weight(noisy_train_labels, K) "
    "(the official NLNL computes max_count / count from train_loader.dataset.targets)"
  ),
}


class AuthorsClass:
  """How one official class maps to aplx: `get(self.loss, **(authors options | defaults | args))`.

  loss: the aplx name. defaults: the class's constructor defaults where they differ from aplx's (FocalLoss
  has gamma=0). renamed: {official argument: aplx parameter}. ignored: arguments the class accepts and
  never uses (their value is dropped, with a warning if it is not 1). refused: {argument: what to do}.
  """

  def __init__(self, loss, *, defaults=None, renamed=None, ignored=(), refused=None):
    self.loss = loss
    self.defaults = dict(defaults or {})
    self.renamed = dict(renamed or {})
    self.ignored = tuple(ignored)
    self.refused = {"num_classes": _NOT_TAKEN["num_classes"], **(refused or {})}


_FOCAL_REFUSED = {
  "size_average": _NOT_TAKEN["size_average"],
  "alpha": (
    "the official FocalLoss's alpha weighs each example by alpha[y]: multiply the per-example loss "
    "by jnp.asarray(alpha)[labels] (NormalizedFocalLoss never uses it)"
  ),
}

# Every class of the official loss.py (and torch.nn.CrossEntropyLoss, which it registers), in file order.
AUTHORS_CLASSES: dict[str, AuthorsClass] = {
  "CrossEntropyLoss": AuthorsClass("ce"),
  "SCELoss": AuthorsClass("sce"),
  "ReverseCrossEntropy": AuthorsClass("rce"),
  "NormalizedReverseCrossEntropy": AuthorsClass("nrce"),
  "NormalizedCrossEntropy": AuthorsClass("nce"),
  "GeneralizedCrossEntropy": AuthorsClass("gce"),
  "NormalizedGeneralizedCrossEntropy": AuthorsClass("ngce"),
  "MeanAbsoluteError": AuthorsClass("mae"),
  "NormalizedMeanAbsoluteError": AuthorsClass("nmae"),
  "NCEandRCE": AuthorsClass("nce+rce"),
  "NCEandMAE": AuthorsClass("nce+mae"),
  "GCEandMAE": AuthorsClass("gce+mae", ignored=("alpha",)),
  "GCEandRCE": AuthorsClass("gce+rce", ignored=("alpha",)),
  "GCEandNCE": AuthorsClass("gce+nce", ignored=("alpha", "beta")),
  "NGCEandNCE": AuthorsClass("ngce+nce"),
  "NGCEandMAE": AuthorsClass("ngce+mae"),
  "NGCEandRCE": AuthorsClass("ngce+rce"),
  "MAEandRCE": AuthorsClass("mae+rce"),
  "NLNL": AuthorsClass(
    "nlnl",
    defaults={"min_prob": 1e-5},  # torch.clamp(1 - p, min=1e-5)
    renamed={"ln_neg": "num_negatives"},
    refused={"train_loader": _NOT_TAKEN["train_loader"]},
  ),
  "FocalLoss": AuthorsClass("fl", defaults={"gamma": 0.0}, refused=_FOCAL_REFUSED),
  "NormalizedFocalLoss": AuthorsClass("nfl", defaults={"gamma": 0.0}, refused=_FOCAL_REFUSED),
  "NFLandNCE": AuthorsClass("nfl+nce"),
  "NFLandMAE": AuthorsClass("nfl+mae"),
  "NFLandRCE": AuthorsClass("nfl+rce"),
  "DMILoss": AuthorsClass("dmi"),
}
