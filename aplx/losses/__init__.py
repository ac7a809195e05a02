"""aplx.losses: robust classification losses for noisy labels, optax style.

Every loss is `fn(logits, labels, *, <hyperparameters>) -> per_example_loss`: logits `[..., K]`
(float16 / bfloat16 / float32 / float64, computed in float32 or wider), integer labels `[...]`,
output `[...]` float32 (float64 for float64 logits), never reduced. jit, grad, vmap and sharding work;
shapes, dtypes and hyperparameters are checked at trace time.

    loss_fn = aplx.losses.get("nce+rce", alpha=1.0, beta=1.0)
    loss = loss_fn(logits, labels).mean()

Metadata: every loss function (and every `get(...)` result) has `kind` ('active' / 'passive' as in
Table 1 of Ma et al. 2020, 'active+passive' for APL pairs) and `needs_key`.

Randomness: only `nlnl` (and pairs containing it) needs a PRNG key. Its `needs_key` attribute is
True; a trainer should call `loss_fn(logits, labels, key=jax.random.fold_in(rng, step))` exactly
when `getattr(loss_fn, "needs_key", False)` is true. All other losses are deterministic and take
no key.

Out-of-range labels: under jit nothing can raise on data, so an out-of-range (or negative) label
makes that example's loss NaN (never a silently wrong finite number). `check_labels` raises a
clear error eagerly, or through `jax.experimental.checkify` inside jit.

Hyperparameters are checked when they are Python or NumPy numbers (in `get`, or at trace time).
Hyperparameters passed as traced arrays (jit arguments, e.g. a swept `q`) are not checked: nothing can
raise on a traced value, so an out-of-range one (`gce` with q = -1) gives finite but meaningless
losses. Validate such values before tracing, or wrap the step with `jax.experimental.checkify`.

Differences between the paper and the authors' code are keyword options whose defaults are the
paper's mathematics; see docs/fidelity.md.
"""

from aplx.losses._base import AUTHORS_LOG_ZERO, check_labels
from aplx.losses._beyond import ael, agce, anl_ce, anl_fl, aul, ce_eps, nlnl, nnce, nnfl, poly1, taylor_ce
from aplx.losses._classic import cross_entropy, focal_loss, gce, mae, rce, sce
from aplx.losses._composition import LossInfo, apl, get, info, names, normalize
from aplx.losses._normalized import nce, nfl, ngce, nmae, nrce

__all__ = [
  "AUTHORS_LOG_ZERO",
  "LossInfo",
  "ael",
  "agce",
  "anl_ce",
  "anl_fl",
  "apl",
  "aul",
  "ce_eps",
  "check_labels",
  "cross_entropy",
  "focal_loss",
  "gce",
  "get",
  "info",
  "mae",
  "names",
  "nce",
  "nfl",
  "ngce",
  "nlnl",
  "nmae",
  "nnce",
  "nnfl",
  "normalize",
  "nrce",
  "poly1",
  "rce",
  "sce",
  "taylor_ce",
]
