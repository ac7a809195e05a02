"""Composition: `normalize` (Eq. 1 for any loss) and `apl` (Eq. 6)."""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from aplx.losses import _base

LossFn = Callable[..., jax.Array]


# ----------------------------------------------------------------------------------------------------
# normalize (Eq. 1) and apl (Eq. 6)
# ----------------------------------------------------------------------------------------------------


def normalize(loss_fn: LossFn) -> LossFn:
  """Eq. (1) for any loss: L_norm(f(x), y) = L(f(x), y) / sum_{j=1..K} L(f(x), j).

  Works for any `loss_fn(logits, labels, **kw) -> [...]` written for integer labels and a last class
  axis; keyword arguments (hyperparameters, `key`) are passed through to every evaluation. The
  returned function also takes `axis` and `where` (it moves the class axis and masks itself, so
  `loss_fn` need not support them) and soft labels q [..., K], for which it returns the expectation
  of Eq. (1) over y ~ q: sum_k q_k L(f(x), k) / sum_j L(f(x), j) (only integer labels reach
  `loss_fn`, so this works for every loss).

  Cost: K evaluations of `loss_fn` (vmapped over the candidate label), so K times the time and
  an extra [K, ..., K]-sized intermediate; prefer the closed forms (`nce`, `nfl`, `ngce`, `nmae`,
  `nrce`), which the tests check against this function.

  Args:
    loss_fn: a per-example loss with the aplx signature. Its `kind` and `needs_key` attributes are
      carried over.

  Returns:
    The normalized loss, `fn(logits, labels, axis=-1, where=None, **kw)`.

  Example:
    >>> import jax.numpy as jnp
    >>> from aplx import losses
    >>> jnp.set_printoptions(precision=4)
    >>> logits, labels = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), jnp.array([0, 2])
    >>> print(losses.normalize(losses.cross_entropy)(logits, labels))
    [0.0308 0.4245]
    >>> print(losses.nce(logits, labels))  # the closed form
    [0.0308 0.4245]

  Reference: Ma et al. 2020, Eq. (1).
  """

  if _attr(loss_fn, "batch_level"):
    raise ValueError(
      f"normalize: {getattr(loss_fn, '__name__', 'loss')} is a batch-level loss (one value per batch); "
      "Eq. (1) normalizes a per-example loss."
    )

  def normalized(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    axis: int | tuple[int, ...] | None = -1,
    where: jax.typing.ArrayLike | None = None,
    **kwargs,
  ) -> jax.Array:
    z, labels_v, k, where = _base._validate(
      "normalize", logits, labels, axis=axis, where=where, soft_labels=True
    )
    soft = jnp.issubdtype(labels_v.dtype, jnp.floating)
    batch_shape = z.shape[:-1]
    dtype = jnp.int32 if soft else labels_v.dtype
    cand = jnp.broadcast_to(
      jnp.arange(k, dtype=dtype).reshape((k,) + (1,) * len(batch_shape)), (k,) + batch_shape
    )
    all_labels = jax.vmap(lambda j: loss_fn(z, j, **kwargs))(cand)  # [K, ...]
    all_labels = jnp.moveaxis(all_labels, 0, -1)  # [..., K]
    num = jnp.sum(labels_v * all_labels, axis=-1) if soft else _base._gather(all_labels, labels_v)
    return _base._masked(num / jnp.sum(all_labels, axis=-1), where)

  name = getattr(loss_fn, "__name__", "loss")
  normalized.__name__ = f"normalized_{name}"
  normalized.__doc__ = f"Eq. (1) normalization of `{name}` (K evaluations); see aplx.losses.normalize."
  normalized.kind = getattr(loss_fn, "kind", "unknown")
  normalized.needs_key = _needs_key(loss_fn)
  normalized.soft_labels = True
  return normalized


def _attr(fn: LossFn, name: str) -> bool:
  """`fn.<name>`, looking through functools.partial (`partial(nlnl, ...)` has no attributes)."""
  while isinstance(fn, functools.partial) and not hasattr(fn, name):
    fn = fn.func
  return bool(getattr(fn, name, False))


def _needs_key(fn: LossFn) -> bool:
  return _attr(fn, "needs_key")


def apl(active: LossFn, passive: LossFn, *, alpha: float = 1.0, beta: float = 1.0) -> LossFn:
  """Active Passive Loss, L_APL = alpha L_active + beta L_passive  (Eq. 6).

  Bind the components' hyperparameters first (`functools.partial(nfl, gamma=0.5)`), or use
  `get('nfl+rce', gamma=0.5, ...)`, which does it for you. If a component needs a PRNG key
  (`needs_key`), the returned function takes `key=` and passes it on (split if both need one).
  `axis` and `where` are handled here (the components see a last class axis and no mask, so any
  loss works); soft labels are passed on to both components, which raise if they do not take them.

  Args:
    active: loss_fn(logits, labels) -> [...], the active term (e.g. `nce`).
    passive: loss_fn(logits, labels) -> [...], the passive term (e.g. `rce`).
    alpha: weight of the active term, >= 0 (Python number or array; see the note on traced values
      in `aplx.losses`).
    beta: weight of the passive term, >= 0.

  Returns:
    loss_fn(logits, labels, axis=-1, where=None, *, key=None) -> [...], with `kind` =
    '<active kind>+<passive kind>'.

  Example:
    >>> import jax.numpy as jnp
    >>> from aplx import losses
    >>> jnp.set_printoptions(precision=4)
    >>> logits, labels = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), jnp.array([0, 2])
    >>> import functools
    >>> loss_fn = losses.apl(losses.nce, functools.partial(losses.rce, log_zero=-4.0), alpha=1.0, beta=1.0)
    >>> print(loss_fn(logits, labels))
    [0.6556 3.5768]

  Reference: Ma et al. 2020, Eq. (6).
  """
  _base._check_weights("apl", alpha=alpha, beta=beta)
  if _attr(active, "batch_level") or _attr(passive, "batch_level"):
    raise ValueError(
      "apl: a batch-level loss (dmi: one value per batch) does not pair per example; add the two "
      "yourself: alpha * a(logits, labels).mean() + beta * dmi(logits, labels).mean()."
    )
  need_a = _needs_key(active)
  need_p = _needs_key(passive)

  def combined(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    axis: int | tuple[int, ...] | None = -1,
    where: jax.typing.ArrayLike | None = None,
    *,
    key: jax.Array | None = None,
  ) -> jax.Array:
    kw_a, kw_p = {}, {}
    if need_a or need_p:
      if key is None:
        raise ValueError("apl: a component needs a PRNG key; call loss_fn(logits, labels, key=...).")
      if need_a and need_p:
        ka, kp = jax.random.split(key)
        kw_a, kw_p = {"key": ka}, {"key": kp}
      elif need_a:
        kw_a = {"key": key}
      else:
        kw_p = {"key": key}
    if axis != -1 or where is not None:
      logits, labels, _, where = _base._validate(
        "apl", logits, labels, axis=axis, where=where, soft_labels=True
      )
    value = alpha * active(logits, labels, **kw_a) + beta * passive(logits, labels, **kw_p)
    return _base._masked(value, where)

  kind_a = getattr(active, "kind", "unknown")
  kind_p = getattr(passive, "kind", "unknown")
  combined.__name__ = f"apl_{getattr(active, '__name__', 'active')}_{getattr(passive, '__name__', 'passive')}"
  combined.kind = f"{kind_a}+{kind_p}"
  combined.needs_key = need_a or need_p
  return combined
