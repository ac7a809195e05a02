"""aplx.losses: robust classification losses for noisy labels, optax style.

Every loss is `fn(logits, labels, axis=-1, where=None, *, <hyperparameters>) -> per_example_loss`:
logits `[..., K]` with the classes on `axis` (e.g. `axis=1` for NCHW segmentation logits
`[B, K, H, W]` and labels `[B, H, W]`; a tuple of axes flattens them into K classes, an integer label
then being a flat index into that slice, as in optax), integer labels `[...]` (or, for the losses that
define them, class probabilities of logits' shape: soft labels), output `[...]`, never reduced. `axis`
and `where` are the third and fourth positional arguments, as in optax's
`softmax_cross_entropy_with_integer_labels(logits, labels, axis, where)`; hyperparameters are
keyword-only. jit, grad, vmap and sharding work; shapes, dtypes and hyperparameters are checked at
trace time.

    loss_fn = aplx.losses.get("nce+rce", alpha=1.0, beta=1.0)
    loss = loss_fn(logits, labels).mean()
    loss = loss_fn(logits, labels, axis=1, where=labels != 255).sum() / (labels != 255).sum()

Dtype policy: optax's losses return their input's dtype (bfloat16 logits give a bfloat16 loss). aplx
computes in float32 or wider and returns float32 for float16 / bfloat16 / float32 logits, float64 for
float64 logits; soft labels are cast to that compute dtype and never change the output dtype. Reason:
the normalized losses are ratios of K-term sums and small differences (1 - p_y, p clamped at 1e-7),
which bfloat16's 8-bit mantissa rounds to a few percent, and the loss is reduced over the batch in
the train step, which wants float32 anyway; mixed-precision models cast logits up for the loss.

`where`: a bool mask of the output's shape `[...]` (one entry per example; optax's class masks of
logits' shape, which exclude classes from the softmax, are not supported: every normalizer here is
defined over all K classes). Excluded entries give exactly 0 loss and exactly 0 gradient even when
they hold NaN / inf logits or ignore-index labels (-1, 255, K): they are replaced by finite stand-ins
before computing, then masked (a plain jnp.where on the output would leak NaN gradients).

Soft labels `q` (floating dtype, logits' shape, rows summing to 1) are taken by ce, fl, gce, mae,
rce, sce, nce, nfl, ngce, nmae, nrce, poly1, their pairs, and `normalize(any_loss)`; the definition of
each is in its docstring (label-weighted sums sum_k q_k L(f, k) except MAE sum_k |p_k - q_k| and RCE
-sum_k p_k max(log q_k, A); normalized losses are the expectation of Eq. 1 over y ~ q). The other
losses are defined for integer labels only and raise a TypeError. Entries and row sums are checked
when the labels are concrete; traced labels (inside jit) cannot be checked.

Metadata: `info(name)` gives `kind` ('active' / 'passive' as in Table 1 of Ma et al. 2020,
'active+passive' for APL pairs, 'batch' for DMI), `needs_key`, `soft_labels`, `batch_level`, `params`
and `reference`; `get(...)` results (`Loss` objects) carry them as attributes, their signature lists
every hyperparameter with its value, and they compare equal, hash and pickle by their arguments.

Randomness: only `nlnl` (and pairs containing it) needs a PRNG key. Its `needs_key` attribute is
True; a trainer should call `loss_fn(logits, labels, key=jax.random.fold_in(rng, step))` exactly
when `getattr(loss_fn, "needs_key", False)` is true. All other losses are deterministic and take
no key.

Batch-level losses: `dmi` (-log |det(Y^T P)|) is one value per batch, returned broadcast to `[...]`,
so `.mean()` is the loss; `info('dmi').batch_level` is True. It does not pair or normalize.

Out-of-range labels: under jit nothing can raise on data, so an out-of-range (or negative) label
makes that example's loss NaN (never a silently wrong finite number), unless `where` excludes it
(then 0). `check_labels` raises a clear error eagerly, or through `jax.experimental.checkify` inside
jit.

Hyperparameters are checked when they are Python or NumPy numbers (in `get`, or at trace time).
Hyperparameters passed as traced arrays (jit arguments, e.g. a swept `q`) are not checked: nothing can
raise on a traced value, so an out-of-range one (`gce` with q = -1) gives finite but meaningless
losses. Validate such values before tracing, or wrap the step with `jax.experimental.checkify`.

The paper and the authors' code: aplx's defaults are the paper's formulas (Ma et al., ICML 2020).
Where the authors' PyTorch code (github.com/HanxunH/Active-Passive-Losses, `loss.py`), which produced
the published tables, differs, a keyword option reproduces it, and `get(name, fidelity="authors")`
sets them all (`AUTHORS_LOSS_OPTIONS`): RCE's A = log(1e-4) = -9.21 instead of -4, p clamped at 1e-7,
MAE = 1 - p_y (half the paper's 2 (1 - p_y)), focal factors without gradient, NRCE's (K - 1) / 4. The
class names of that file are accepted by `get` (`get("NCEandRCE", alpha=1, beta=1)` is the authors'
`NCEandRCE(1, 1, num_classes)`, per example).
"""

from aplx.losses._authors import AUTHORS_LOG_ZERO, AUTHORS_LOSS_OPTIONS, AUTHORS_MIN_PROB
from aplx.losses._base import check_labels
from aplx.losses._beyond import (
  ael,
  agce,
  anl_ce,
  anl_fl,
  aul,
  ce_eps,
  dmi,
  nlnl,
  nlnl_class_weight,
  nnce,
  nnfl,
  poly1,
  taylor_ce,
)
from aplx.losses._classic import cross_entropy, focal_loss, gce, mae, rce, sce
from aplx.losses._composition import apl, normalize
from aplx.losses._normalized import nce, nfl, ngce, nmae, nrce
from aplx.losses._registry import (
  FIDELITIES,
  Loss,
  LossInfo,
  authors_class_names,
  fidelity_params,
  get,
  info,
  names,
)

__all__ = [
  "AUTHORS_LOG_ZERO",
  "AUTHORS_LOSS_OPTIONS",
  "AUTHORS_MIN_PROB",
  "FIDELITIES",
  "Loss",
  "LossInfo",
  "ael",
  "agce",
  "anl_ce",
  "anl_fl",
  "apl",
  "aul",
  "authors_class_names",
  "ce_eps",
  "check_labels",
  "cross_entropy",
  "dmi",
  "fidelity_params",
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
  "nlnl_class_weight",
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
