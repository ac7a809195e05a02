"""Shared machinery for aplx.losses: input validation, log-space statistics, metadata, label checks.

Everything here runs at trace time (shapes, dtypes, Python hyperparameters) except `_Stats`, which
builds the few log-space quantities every loss is written in.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import numbers
from typing import Callable

import jax
from jax.experimental import checkify
import jax.numpy as jnp
import numpy as np

from aplx.losses._authors import AUTHORS_LOG_ZERO

_FLOAT_DTYPES = (jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64)


# ----------------------------------------------------------------------------------------------------
# Metadata
# ----------------------------------------------------------------------------------------------------


def _annotate(
  kind: str, needs_key: bool = False, soft_labels: bool = False, batch_level: bool = False
) -> Callable[[Callable], Callable]:
  """Attaches `kind` ('active' / 'passive' / 'active+passive'), `needs_key`, `soft_labels` and
  `batch_level` (one value for the whole batch, broadcast: DMI) to a loss.

  `soft_labels` must match the loss's `_validate(..., soft_labels=...)` call (a test checks both).
  """

  def wrap(fn):
    fn.kind = kind
    fn.needs_key = needs_key
    fn.soft_labels = soft_labels
    fn.batch_level = batch_level
    return fn

  return wrap


# ----------------------------------------------------------------------------------------------------
# Validation (trace time)
# ----------------------------------------------------------------------------------------------------

# The losses whose `_validate` call has soft_labels=True (checked against the registry by a test).
SOFT_LABEL_LOSSES = "ce, fl, gce, mae, rce, sce, nce, nfl, ngce, nmae, nrce, poly1"


def _validate(
  name: str, logits, labels, *, axis=-1, where=None, soft_labels: bool = False
) -> tuple[jax.Array, jax.Array, int, jax.Array | None]:
  """Checks ranks and dtypes, moves the class axis last and neutralises the entries `where` excludes.

  Returns (logits [..., K] in the compute dtype, labels, K, where). labels are integer ids [...] or,
  for a loss with `soft_labels=True`, probabilities [..., K] in the compute dtype. where is None or a
  bool [...]; where it is False the logits are set to 0 and the label to class 0 (integer) or the
  uniform distribution (soft), so that the value computed there is finite and `_masked` gives an
  exactly zero loss and gradient even if those entries held NaN logits or ignore-index labels.
  """
  logits = jnp.asarray(logits) if not isinstance(logits, jax.Array) else logits
  labels = jnp.asarray(labels) if not isinstance(labels, jax.Array) else labels
  if logits.ndim < 1:
    raise ValueError(f"{name}: `logits` must have shape [..., num_classes], got a scalar. Add a class axis.")
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    raise TypeError(
      f"{name}: `logits` must be floating point (float32, bfloat16, float16, float64), got "
      f"{logits.dtype}. Cast with logits.astype(jnp.float32)."
    )
  axes = _class_axes(name, axis, logits.shape)
  batch_axes = tuple(a for a in range(logits.ndim) if a not in axes)
  batch_shape = tuple(logits.shape[a] for a in batch_axes)
  num_classes = math.prod(logits.shape[a] for a in axes)
  soft = jnp.issubdtype(labels.dtype, jnp.floating) and labels.shape == logits.shape
  if soft and not soft_labels:
    raise TypeError(
      f"{name}: soft (probability) labels are not supported: this loss is defined for integer class "
      f"labels only. Pass integer class ids of shape {batch_shape} "
      f"(e.g. labels.argmax({axis})), or use a loss that takes probabilities: {SOFT_LABEL_LOSSES}, "
      f"their pairs, or normalize(any_loss)."
    )
  if not soft and not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(
      f"{name}: `labels` must be integer class ids of shape {batch_shape} (logits' shape without the "
      f"class axis {axis})"
      + (f" or class probabilities of shape logits.shape = {logits.shape}" if soft_labels else "")
      + f", got dtype {labels.dtype} and shape {labels.shape}. If you have float ids use "
      f"labels.astype(jnp.int32)."
    )
  if not soft and labels.shape != batch_shape:
    hint = ""
    if labels.shape == logits.shape:
      hint = f" It looks one-hot: pass labels.argmax({axis})"
      hint += ", or labels.astype(jnp.float32) as probabilities." if soft_labels else "."
    elif labels.ndim == logits.ndim - 2 or labels.ndim == logits.ndim:
      hint = f" Check that `logits` has exactly one class axis (axis={axis})."
    raise ValueError(
      f"{name}: `labels` must have shape {batch_shape} (logits.shape without the class axis {axis}; "
      f"one integer class id per example), got {labels.shape}.{hint}"
    )
  if num_classes < 2:
    raise ValueError(f"{name}: need at least 2 classes on axis {axis} of `logits`, got K = {num_classes}.")
  if where is not None:
    where = jnp.asarray(where) if not isinstance(where, jax.Array) else where
    if where.dtype != jnp.bool_:
      raise TypeError(
        f"{name}: `where` must be a boolean mask (True = include), got dtype {where.dtype}. Use "
        f"where.astype(bool); for per-example weights multiply the returned loss instead."
      )
    if where.shape != batch_shape:
      hint = ""
      if where.shape == logits.shape:
        hint = " A class mask of logits' shape (which optax also accepts) is not supported."
      raise ValueError(
        f"{name}: `where` must have shape {batch_shape}, one entry per example (the shape of the "
        f"loss), got {where.shape}.{hint}"
      )
  if axes != (logits.ndim - 1,):  # Class axes last, flattened in the order given (as optax).
    logits = logits.transpose(batch_axes + axes).reshape(batch_shape + (num_classes,))
    if soft:
      labels = labels.transpose(batch_axes + axes).reshape(batch_shape + (num_classes,))
  compute = jnp.promote_types(logits.dtype, jnp.float32)
  logits = logits.astype(compute)
  if soft:
    _check_soft_labels(name, labels, where)
    labels = labels.astype(compute)
  if where is not None:
    logits = jnp.where(where[..., None], logits, 0.0)
    labels = jnp.where(where[..., None], labels, 1.0 / num_classes) if soft else jnp.where(where, labels, 0)
  return logits, labels, num_classes, where


def _class_axes(name: str, axis, shape: tuple[int, ...]) -> tuple[int, ...]:
  """The class axes of logits of `shape` as non-negative ints, in the order given.

  `axis`: an int, a tuple of ints (the classes are those axes flattened, in that order: an integer label
  is a flat index into logits' slice of shape `[shape[a] for a in axis]`, as in optax), or None (every
  axis: one example).
  """
  ndim = len(shape)
  if axis is None:
    return tuple(range(ndim))
  many = isinstance(axis, (tuple, list))
  items = tuple(axis) if many else (axis,)
  if not items or any(isinstance(a, bool) or not isinstance(a, (int, np.integer)) for a in items):
    raise TypeError(
      f"{name}: `axis` must be an int (the class axis of `logits`), a non-empty tuple of ints (class "
      f"axes, flattened) or None (all axes), got {axis!r}."
    )
  for a in items:
    if not -ndim <= a < ndim:
      raise ValueError(f"{name}: `axis` = {a} is out of range for `logits` of shape {shape} (ndim {ndim}).")
  axes = tuple(int(a) % ndim for a in items)
  if len(set(axes)) != len(axes):
    raise ValueError(f"{name}: `axis` = {axis!r} names an axis twice (logits of shape {shape}).")
  return axes


def _check_soft_labels(name: str, q: jax.Array, where) -> None:
  """Probabilities [..., K]: >= 0, rows summing to 1. Checked only on concrete (not traced) values."""
  if isinstance(q, jax.core.Tracer) or isinstance(where, jax.core.Tracer):
    return
  rows = np.asarray(q, np.float64).reshape(-1, q.shape[-1])
  if where is not None:
    rows = rows[np.asarray(where).reshape(-1)]
  if not np.all(np.isfinite(rows)):
    raise ValueError(f"{name}: soft `labels` must be finite probabilities; got NaN or inf.")
  if np.any(rows < 0):
    raise ValueError(
      f"{name}: soft `labels` must be probabilities >= 0, got a minimum of {rows.min():.4g}. If they "
      f"are logits, pass jax.nn.softmax(labels, axis) instead."
    )
  tol = max(1e-3, 2 * float(jnp.finfo(q.dtype).eps))
  sums = rows.sum(-1)
  bad = np.abs(sums - 1.0) > tol
  if np.any(bad):
    raise ValueError(
      f"{name}: each row of soft `labels` must sum to 1 over the class axis (tolerance {tol:g}); "
      f"{int(bad.sum())} row(s) do not, e.g. {sums[bad][0]:.6g}. Normalise with "
      f"labels / labels.sum(axis, keepdims=True)."
    )


def _masked(loss: jax.Array, where) -> jax.Array:
  """0 where `where` is False. Safe for gradients because `_validate` made those entries finite."""
  return loss if where is None else jnp.where(where, loss, 0.0)


def _is_static(x) -> bool:
  return isinstance(x, (numbers.Number, np.ndarray, np.generic)) and not isinstance(x, bool)


def _check_range(
  name: str, arg: str, value, *, lo=None, hi=None, lo_open=False, hi_open=False, fix: str = ""
) -> None:
  """Validates a Python/NumPy hyperparameter; traced values are left alone (no host sync)."""
  if isinstance(value, bool):
    raise TypeError(f"{name}: `{arg}` must be a number, got the bool {value}.")
  if not _is_static(value):
    if isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer):
      value = np.asarray(value)
    else:
      return
  v = np.asarray(value, dtype=np.float64)
  if v.size and not np.all(np.isfinite(v)):
    raise ValueError(f"{name}: `{arg}` must be finite, got {value}.")
  bad = False
  if lo is not None:
    bad |= bool(np.any(v <= lo) if lo_open else np.any(v < lo))
  if hi is not None:
    bad |= bool(np.any(v >= hi) if hi_open else np.any(v > hi))
  if bad:
    left = "(" if (lo_open or lo is None) else "["
    right = ")" if (hi_open or hi is None) else "]"
    rng = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
    raise ValueError(f"{name}: `{arg}` must be in {rng}, got {value}.{(' ' + fix) if fix else ''}")


# True while `get` traces a loss once on a stand-in input to validate its hyperparameters: checks that
# need the real number of classes K are skipped then (they run on the first real call).
_PROBING = contextvars.ContextVar("aplx_losses_probing", default=False)


@contextlib.contextmanager
def _probing():
  token = _PROBING.set(True)
  try:
    yield
  finally:
    _PROBING.reset(token)


def _knows_k() -> bool:
  """False while `get` probes with a stand-in K: skip checks that depend on K."""
  return not _PROBING.get()


def _check_weights(name: str, **weights) -> None:
  """Term weights (alpha, beta, scale): finite and >= 0, else the loss could go negative or NaN."""
  for arg, value in weights.items():
    _check_range(
      name,
      arg,
      value,
      lo=0.0,
      fix="A term weight must be >= 0: a negative one makes the loss unbounded below.",
    )


def _check_min_prob(name: str, min_prob, num_classes: int, arg: str = "min_prob") -> None:
  if min_prob is None:
    return
  _check_range(
    name,
    arg,
    min_prob,
    lo=0.0,
    hi=1.0,
    lo_open=True,
    hi_open=True,
    fix="It is a probability clamp such as 1e-7.",
  )
  if _knows_k() and _is_static(min_prob) and float(min_prob) * num_classes >= 1.0:
    raise ValueError(
      f"{name}: `{arg}` * K must be < 1 (got {min_prob} * {num_classes}); a clamp that large "
      f"makes every probability equal. Use a smaller {arg}, e.g. 1e-7."
    )


def _check_log_zero(name: str, log_zero) -> None:
  _check_range(
    name,
    "log_zero",
    log_zero,
    hi=0.0,
    hi_open=True,
    fix=f"It is A = log 0 := A < 0; the paper uses -4, the authors' code log(1e-4) = "
    f"{AUTHORS_LOG_ZERO:.4f} (aplx.losses.AUTHORS_LOG_ZERO).",
  )


# ----------------------------------------------------------------------------------------------------
# Log-space statistics
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Stats:
  """Log-space pieces of softmax(z) over the last axis, computed once.

  z: logits in the compute dtype. lse: logsumexp(z) (jax.nn.logsumexp: max-shifted, one exp per
  logit, the same work as CE). logp_y: log p_y = z_y - lse for integer labels (NaN for out-of-range
  labels, see `check_labels`); None for soft labels. q: the soft labels [..., K] (None for integer
  labels). num_classes: K.
  """

  z: jax.Array
  lse: jax.Array
  logp_y: jax.Array | None
  num_classes: int
  q: jax.Array | None = None

  @property
  def logp(self) -> jax.Array:
    """log p_k for every class, [..., K]."""
    return self.z - self.lse[..., None]

  def expect(self, per_label: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """The label-weighted sum of a per-label term f(log p_k): f(log p_y), or sum_k q_k f(log p_k).

    For one-hot q the soft form adds exact zeros to f(log p_y), so both agree to rounding.
    """
    if self.q is None:
      return per_label(self.logp_y)
    return jnp.sum(self.q * per_label(self.logp), axis=-1)

  def sum_logp(self) -> jax.Array:
    """sum_k log p_k = sum_k z_k - K logsumexp(z): one extra reduction, no per-logit log.

    In float32 its relative error is about 1e-7 * max|z| / |mean log p|, i.e. at most ~1e-4 in the
    worst case of all logits equal and huge (|z| ~ 1e4); it is always finite and <= -K log K < 0.
    """
    return jnp.sum(self.z, axis=-1) - self.num_classes * self.lse


def _stats(z: jax.Array, labels: jax.Array) -> _Stats:
  """Statistics for integer labels [...] or soft labels [..., K] (floating dtype)."""
  lse = _logsumexp(z)
  if jnp.issubdtype(labels.dtype, jnp.floating):
    return _Stats(z=z, lse=lse, logp_y=None, num_classes=z.shape[-1], q=labels)
  return _Stats(z=z, lse=lse, logp_y=_gather(z, labels) - lse, num_classes=z.shape[-1])


def _softmax_parts(z: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(e, total, lse) over the last axis: e = exp(z - max z), total = sum_k e_k, lse = logsumexp(z)."""
  m = jnp.max(z, axis=-1, keepdims=True)
  m = jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))  # As jax.nn.logsumexp.
  e = jnp.exp(z - m)
  total = jnp.sum(e, axis=-1)
  return e, total, m[..., 0] + jnp.log(total)


@jax.custom_jvp
def _logsumexp(z: jax.Array) -> jax.Array:
  """logsumexp over the last axis (as jax.nn.logsumexp). Its JVP, sum_j p_j dz_j with p = e / total,
  reuses `_softmax_parts`'s e, which `_lse_and_power_sum` computes identically: XLA then keeps one e
  per logit for every term of a loss (an APL pair's two terms included)."""
  return _softmax_parts(z)[2]


@_logsumexp.defjvp
def _logsumexp_jvp(primals, tangents):
  (z,), (dz,) = primals, tangents
  e, total, lse = _softmax_parts(z)
  return lse, jnp.sum(e * dz, axis=-1) / total


def _lse_and_sum(z: jax.Array, term: Callable[..., tuple]) -> tuple[jax.Array, jax.Array]:
  """(logsumexp(z), G = sum_k g(log p_k)) over the last axis, with a hand-written JVP.

  `term(z, lse, p)` returns (G, slope, slope_sum, scale): G [...], the slope [..., K] and a Python
  float with dg/dlog p = scale * slope, and sum_k slope_k if it has it already (else None). JVP:
  dG = scale (sum_j slope_j dz_j - (sum_k slope_k) d lse). The per-logit work (p from the one exp of
  logsumexp, g's transcendental part, the slope) is done once and kept, and the backward pass is one
  multiply-add per logit; left to autodiff, XLA:CPU stores about twice as many [..., K] intermediates
  (NFL and NGCE at ~5x and ~3x the cost of CE instead of ~3.5x and ~2x; benchmarks/losses.py).
  Forward mode and higher derivatives work (the rule is plain jnp; checked in float64). In float32,
  NFL's second derivative is NaN where p rounds to 1, on this path and on plain autodiff alike.
  """

  def primal(z):
    e, total, lse = _softmax_parts(z)
    return (lse, *term(z, lse, e * (1.0 / total)[..., None]))

  @jax.custom_jvp
  def lse_and_sum(z):
    lse, g_sum, _, _, _ = primal(z)
    return lse, g_sum

  @lse_and_sum.defjvp
  def lse_and_sum_jvp(primals, tangents):
    (z,), (dz,) = primals, tangents
    lse, g_sum, slope, slope_sum, scale = primal(z)
    dlse = jax.jvp(_logsumexp, (z,), (dz,))[1]
    slope_sum = jnp.sum(slope, axis=-1) if slope_sum is None else slope_sum
    return (lse, g_sum), (dlse, scale * (jnp.sum(slope * dz, axis=-1) - slope_sum * dlse))

  return lse_and_sum(z)


def _gather(x: jax.Array, labels: jax.Array) -> jax.Array:
  """x[..., labels]; out-of-range (also negative) labels give NaN instead of a wrapped/clamped value.

  Negative labels are mapped to K first, so `mode="fill"` fills them too on every supported jax
  (older releases wrap negative indices and have no `wrap_negative_indices` switch).
  """
  num_classes = x.shape[-1]
  if not jnp.issubdtype(labels.dtype, jnp.signedinteger) or labels.dtype.itemsize < 4:
    # int8 cannot hold K; unsigned ids above int32's range wrap negative and so become K (NaN) too.
    labels = labels.astype(jnp.int32)
  labels = jnp.where(labels < 0, num_classes, labels)
  return jnp.take_along_axis(x, labels[..., None], axis=-1, mode="fill", fill_value=jnp.nan)[..., 0]


def _one_minus_exp(logp: jax.Array) -> jax.Array:
  """1 - exp(logp), accurate near logp = 0."""
  return -jnp.expm1(logp)


def _focal_factor(logp: jax.Array, gamma, detach: bool, tiny: float = 1e-30, u=None) -> jax.Array:
  """(1 - p)^gamma from log p; finite with a finite gradient for every gamma >= 0 and p in [0, 1].

  u = 1 - p is clamped at `tiny` (the clamp only acts where p rounds to 1, where the
  factor multiplies log p = 0, and it stops the infinite d/du u^gamma there). gamma = 0 gives
  exactly 1; integer and half-integer gamma (0.5, 1, 1.5, 2, ...) use sqrt / integer powers
  instead of exp(gamma * log u), which keeps NFL within a few CE costs.
  """
  if _is_static(gamma) and float(gamma) == 0.0:
    return jnp.ones_like(logp)
  # 1 - exp rather than -expm1: XLA:CPU vectorises exp but not expm1 (NFL was 4x slower with it).
  # The absolute error near p = 1 (~6e-8) only touches terms that are multiplied by log p ~ -u.
  if u is None:  # (1 - p, clamped) when the caller has it already.
    u = jnp.maximum(1.0 - jnp.exp(logp), tiny)
  if _is_static(gamma) and float(2 * gamma).is_integer() and 2 * gamma <= 16:
    n2 = int(2 * gamma)
    factor = jax.lax.integer_pow(u, n2 // 2) if n2 % 2 == 0 else jax.lax.integer_pow(jnp.sqrt(u), n2)
  else:
    factor = jnp.exp(gamma * jnp.log(u))
  return jax.lax.stop_gradient(factor) if detach else factor


def _focal_term(gamma: float, detach: bool, tiny: float = 1e-30) -> Callable[..., tuple]:
  """`_lse_and_sum`'s term for NFL's denominator: sum_k FL_k, FL = -(1 - p)^gamma log p, and the slope
  dFL/dlog p = -(1 - p)^gamma + gamma (1 - p)^(gamma - 1) p log p; its second part is 0 where the clamp
  of `_focal_factor` acts, and left out when `detach` (the factor is then a constant).

  The sum is lse sum_k f_k - sum_k f_k z_k (f: the factor), which needs no stored [..., K] log p. Like
  NCE's `sum_logp` it loses ~1e-7 max|z| / |mean log p| relative accuracy in float32 (at most ~1e-4,
  all logits equal and huge); the slope uses log p itself."""

  def term(z, lse, p):
    u = jnp.maximum(1.0 - p, tiny)
    logp = z - lse[..., None]
    factor = _focal_factor(logp, gamma, detach, tiny, u=u)
    g_sum = lse * jnp.sum(factor, axis=-1) - jnp.sum(factor * z, axis=-1)
    if detach or float(gamma) == 0.0:
      return g_sum, -factor, None, 1.0
    slope = jnp.where(1.0 - p > tiny, gamma / u * p * logp, 0.0) - 1.0
    return g_sum, factor * slope, None, 1.0

  return term


# ----------------------------------------------------------------------------------------------------
# Opt-in label check
# ----------------------------------------------------------------------------------------------------


def check_labels(labels: jax.typing.ArrayLike, num_classes: int) -> None:
  """Raises if any label is outside [0, num_classes).

  Under `jax.jit` the losses cannot raise on data; an out-of-range label makes that example's loss
  NaN (never a silently wrong finite value). Call this to get an error instead:

  * eagerly (concrete labels): raises `ValueError` naming the bad values and positions;
  * inside a jitted function: it records a `checkify` check, so wrap the function with
    `jax.experimental.checkify.checkify` and call `err.throw()`:

      checked = checkify.checkify(jax.jit(lambda z, y: (check_labels(y, 10), loss(z, y))[1]))
      err, value = checked(logits, labels); err.throw()

  Args:
    labels: integer class ids, any shape.
    num_classes: K.
  """
  if isinstance(labels, jax.core.Tracer):
    labels = jnp.asarray(labels)
    checkify.check(
      jnp.all((labels >= 0) & (labels < num_classes)),
      f"labels must be in [0, {num_classes}); got out-of-range values (min {{lo}}, max {{hi}}).",
      lo=jnp.min(labels),
      hi=jnp.max(labels),
    )
    return
  arr = np.asarray(labels)
  if not np.issubdtype(arr.dtype, np.integer):
    raise TypeError(f"check_labels: labels must be integers, got {arr.dtype}.")
  bad = (arr < 0) | (arr >= num_classes)
  if np.any(bad):
    idx = np.argwhere(bad)[:5].tolist()
    vals = arr[bad][:5].tolist()
    raise ValueError(
      f"check_labels: {int(bad.sum())} label(s) outside [0, {num_classes}), e.g. values {vals} at "
      f"positions {idx}. Fix the data pipeline or num_classes."
    )
