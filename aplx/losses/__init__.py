"""aplx.losses: robust classification losses for noisy labels, optax style.

Every loss is `fn(logits, labels, *, <hyperparameters>, axis=-1, where=None) -> per_example_loss`:
logits `[..., K]` with the classes on `axis` (e.g. `axis=1` for NCHW segmentation logits
`[B, K, H, W]` and labels `[B, H, W]`), integer labels `[...]` (or, for the losses that define them,
class probabilities of logits' shape: soft labels), output `[...]`, never reduced. jit, grad, vmap and
sharding work; shapes, dtypes and hyperparameters are checked at trace time.

    loss_fn = aplx.losses.get("nce+rce", alpha=1.0, beta=1.0)
    loss = loss_fn(logits, labels).mean()
    loss = loss_fn(logits, labels, axis=1, where=labels != 255).sum() / (labels != 255).sum()

Dtype policy: optax's losses return their input's dtype (bfloat16 logits give a bfloat16 loss). aplx
computes in float32 or wider and returns float32 for float16 / bfloat16 / float32 logits, float64 for
float64 logits; soft labels are cast to that compute dtype and never change the output dtype.

`where`: a bool mask of the output's shape `[...]` (one entry per example; optax's class masks of
logits' shape are not supported). Excluded entries give exactly 0 loss and exactly 0 gradient even
when they hold NaN / inf logits or ignore-index labels (-1, 255, K): they are replaced by finite
stand-ins before computing, then masked (a plain jnp.where on the output would leak NaN gradients).

Soft labels `q` (floating dtype, logits' shape, rows summing to 1) are taken by ce, fl, gce, mae,
rce, sce, nce, nfl, ngce, nmae, nrce, poly1, their pairs, and `normalize(any_loss)`; the definition of
each is in its docstring (label-weighted sums sum_k q_k L(f, k) except MAE sum_k |p_k - q_k| and RCE
-sum_k p_k max(log q_k, A); normalized losses are the expectation of Eq. 1 over y ~ q). The other
losses are defined for integer labels only and raise a TypeError. Entries and row sums are checked
when the labels are concrete; traced labels (inside jit) cannot be checked.

Metadata: `info(name)` gives `kind` ('active' / 'passive' as in Table 1 of Ma et al. 2020,
'active+passive' for APL pairs), `needs_key`, `soft_labels`, `params` and `reference`; `get(...)`
results also carry them as attributes, and their signature and docstring are the loss's own
(`inspect.signature(get('gce', q=0.5))` shows q=0.5).

Randomness: only `nlnl` (and pairs containing it) needs a PRNG key. Its `needs_key` attribute is
True; a trainer should call `loss_fn(logits, labels, key=jax.random.fold_in(rng, step))` exactly
when `getattr(loss_fn, "needs_key", False)` is true. All other losses are deterministic and take
no key.

Out-of-range labels: under jit nothing can raise on data, so an out-of-range (or negative) label
makes that example's loss NaN (never a silently wrong finite number), unless `where` excludes it
(then 0). `check_labels` raises a clear error eagerly, or through `jax.experimental.checkify` inside
jit.

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
