"""The base losses of Ma et al. (ICML 2020), Section 3.1 and 5.3: CE, FL, MAE, RCE, GCE, SCE.

All take `logits [..., K]` and integer `labels [...]` or probabilities `[..., K]` (soft labels),
the class axis `axis` and a mask `where`, and return the per-example loss `[...]` (float32, or
float64 for float64 input). p = softmax(logits), y = label, q = one-hot(y) or the soft labels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from aplx.losses import _base

_PAPER = "Ma et al., 'Normalized Loss Functions for Deep Learning with Noisy Labels', ICML 2020"


def _rce_core(s: _base._Stats, labels, log_zero, min_prob) -> jax.Array:
  """-sum_k p_k log q_k with log q_y = 0 and log q_{k != y} = A: equals -A (1 - p_y).

  Soft labels: -sum_k p_k max(log q_k, A); log q_k is evaluated only where q_k > e^A (no log 0, so no
  inf and no NaN gradient with respect to q either), and one-hot q gives exactly 0 and A.
  """
  if s.q is not None:
    p = jnp.exp(s.logp if min_prob is None else jnp.maximum(s.logp, jnp.log(min_prob)))
    floor = jnp.exp(log_zero)
    log_q = jnp.where(s.q > floor, jnp.log(jnp.maximum(s.q, floor)), log_zero)
    return -jnp.sum(p * log_q, axis=-1)
  if min_prob is None:
    return -log_zero * _base._one_minus_exp(s.logp_y)
  # Authors' code: p clamped to [min_prob, 1] before the sum over k != y.
  # The sum skips k = y (a mask, not sum - p_y: that cancels to ~1e-7 absolute error in float32,
  # 20% of the loss of a confident example).
  p_c = jnp.exp(jnp.maximum(s.logp, jnp.log(min_prob)))
  classes = jnp.arange(s.num_classes, dtype=labels.dtype).reshape((1,) * labels.ndim + (-1,))
  is_y = classes == labels[..., None]
  off = jnp.sum(jnp.where(is_y, 0.0, p_c), axis=-1)
  return -log_zero * off


@_base._annotate("active", soft_labels=True)
def cross_entropy(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  axis: int | tuple[int, ...] | None = -1,
  where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  """Cross entropy, CE = -sum_k q_k log p_k = logsumexp(z) - z_y.

  Soft labels: -sum_k q_k log p_k with q the given probabilities (as optax.softmax_cross_entropy).

  Args:
    logits: [..., K] unnormalised scores (float16/bfloat16/float32/float64).
    labels: [...] integer class ids in [0, K), or [..., K] class probabilities (soft labels).
    axis: the class axis of `logits` (and of soft labels), e.g. 1 for NCHW logits [B, K, H, W]
      with labels [B, H, W]; a tuple of axes flattens them, in that order, into the K classes (an
      integer label is then a flat index, as in optax); None: every axis is a class axis.
    where: optional bool mask of the output's shape [...]; False entries give 0 loss and exactly 0
      gradient, whatever their logits and labels (e.g. ignore-index 255 or -1).

  Returns:
    [...] per-example loss, float32 (float64 for float64 logits).

  Example:
    >>> import jax.numpy as jnp
    >>> from aplx import losses
    >>> jnp.set_printoptions(precision=4)
    >>> logits, labels = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), jnp.array([0, 2])
    >>> print(losses.cross_entropy(logits, labels))
    [0.1698 1.5514]

  Reference: Ma et al. 2020, Section 3.1. Active (paper Table 1).
  """
  z, labels, _, where = _base._validate(
    "cross_entropy", logits, labels, axis=axis, where=where, soft_labels=True
  )
  s = _base._stats(z, labels)
  return _base._masked(s.expect(lambda lp: -lp), where)


@_base._annotate("active", soft_labels=True)
def focal_loss(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  axis: int | tuple[int, ...] | None = -1,
  where: jax.typing.ArrayLike | None = None,
  *,
  gamma: float = 0.5,
  detach_focal_factor: bool = False,
) -> jax.Array:
  """Focal loss, FL = -sum_k q_k (1 - p_k)^gamma log p_k = -(1 - p_y)^gamma log p_y.

  Computed from log p_y: (1 - p_y)^gamma = exp(gamma * log(-expm1(log p_y))), finite with finite
  gradient for any logits; gamma = 0 is exactly CE. Soft labels: the first form with q the given
  probabilities.

  Args:
    logits: [..., K] float scores.
    labels: [...] integer class ids, or [..., K] probabilities.
    gamma: focusing parameter, >= 0 (the paper uses 0.5).
    detach_focal_factor: if True, no gradient flows through (1 - p_y)^gamma, as in the authors'
      code (`pt = Variable(logpt.data.exp())`). Default False = the paper's mathematics.
    axis: the class axis (see `cross_entropy`).
    where: optional bool mask [...] (see `cross_entropy`).

  Returns:
    [...] per-example loss.

  Example:
    >>> import jax.numpy as jnp
    >>> from aplx import losses
    >>> jnp.set_printoptions(precision=4)
    >>> logits, labels = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), jnp.array([0, 2])
    >>> print(losses.focal_loss(logits, labels, gamma=0.5))
    [0.0671 1.3773]
    >>> print(losses.focal_loss(logits, labels, gamma=0.0))  # = cross_entropy
    [0.1698 1.5514]

  Reference: Lin et al., ICCV 2017; Ma et al. 2020, Section 3.1. Active.
  """
  z, labels, _, where = _base._validate(
    "focal_loss", logits, labels, axis=axis, where=where, soft_labels=True
  )
  _base._check_range("focal_loss", "gamma", gamma, lo=0.0, fix="Use gamma >= 0 (0 = CE).")
  s = _base._stats(z, labels)
  fl = s.expect(lambda lp: -_base._focal_factor(lp, gamma, detach_focal_factor) * lp)
  return _base._masked(fl, where)


@_base._annotate("passive", soft_labels=True)
def mae(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  axis: int | tuple[int, ...] | None = -1,
  where: jax.typing.ArrayLike | None = None,
  *,
  halved: bool = False,
) -> jax.Array:
  """Mean absolute error, MAE = sum_k |p_k - q_k| = 2 (1 - p_y).

  Soft labels: sum_k |p_k - q_k| with q the given probabilities, computed as
  2 sum_k max(p_k - q_k, 0) (equal because both sum to 1; no cancellation for the zero entries of q).

  Args:
    logits: [..., K] float scores.
    labels: [...] integer class ids, or [..., K] probabilities.
    halved: if True return 1 - p_y (half of the above, also for soft labels), the authors' "reduced
      MAE" (their code, and every published beta for *+MAE, uses this half-size MAE). Default
      False = the paper's definition.
    axis: the class axis (see `cross_entropy`).
    where: optional bool mask [...] (see `cross_entropy`).

  Returns:
    [...] per-example loss in [0, 2] ([0, 1] if halved).

  Example:
    >>> import jax.numpy as jnp
    >>> from aplx import losses
    >>> jnp.set_printoptions(precision=4)
    >>> logits, labels = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), jnp.array([0, 2])
    >>> print(losses.mae(logits, labels))  # the paper: 2 (1 - p_y)
    [0.3124 1.5761]
    >>> print(losses.mae(logits, labels, halved=True))  # the authors' code: 1 - p_y
    [0.1562 0.7881]

  Reference: Ghosh et al., AAAI 2017; Ma et al. 2020, Section 3.1. Passive (paper Table 1).
  """
  z, labels, _, where = _base._validate("mae", logits, labels, axis=axis, where=where, soft_labels=True)
  s = _base._stats(z, labels)
  scale = 1.0 if halved else 2.0
  if s.q is None:
    return _base._masked(scale * _base._one_minus_exp(s.logp_y), where)
  return _base._masked(scale * jnp.sum(jnp.maximum(jnp.exp(s.logp) - s.q, 0.0), axis=-1), where)


@_base._annotate("passive", soft_labels=True)
def rce(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  axis: int | tuple[int, ...] | None = -1,
  where: jax.typing.ArrayLike | None = None,
  *,
  log_zero: float = -4.0,
  min_prob: float | None = None,
) -> jax.Array:
  """Reverse cross entropy, RCE = -sum_k p_k log q_k with log 0 := A (`log_zero`) = -A (1 - p_y).

  Soft labels: -sum_k p_k max(log q_k, A), i.e. log q clamped below at A, as the authors' clamp of
  the label to [e^A, 1] does (with `min_prob`, p is clamped to [min_prob, 1] first).

  Args:
    logits: [..., K] float scores.
    labels: [...] integer class ids, or [..., K] probabilities.
    log_zero: A < 0, the value given to log 0. The paper uses -4; the authors' code clamps the
      one-hot to [1e-4, 1], i.e. A = log(1e-4) = -9.2103 (`aplx.losses.AUTHORS_LOG_ZERO`).
    min_prob: if set, p is clamped to [min_prob, 1] before the sum over k != y, as in the authors'
      code (1e-7). Default None = the paper's mathematics (no clamp).
    axis: the class axis (see `cross_entropy`).
    where: optional bool mask [...] (see `cross_entropy`).

  Returns:
    [...] per-example loss in [0, -A].

  Example:
    >>> import jax.numpy as jnp
    >>> from aplx import losses
    >>> jnp.set_printoptions(precision=4)
    >>> logits, labels = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), jnp.array([0, 2])
    >>> print(losses.rce(logits, labels))  # the paper: A = -4
    [0.6248 3.1522]
    >>> print(losses.rce(logits, labels, log_zero=losses.AUTHORS_LOG_ZERO, min_prob=1e-7))  # authors
    [1.4387 7.2583]

  Reference: Wang et al., 'Symmetric Cross Entropy for Robust Learning with Noisy Labels', ICCV
  2019; Ma et al. 2020, Section 3.1. Passive.
  """
  z, labels, k, where = _base._validate("rce", logits, labels, axis=axis, where=where, soft_labels=True)
  _base._check_log_zero("rce", log_zero)
  _base._check_min_prob("rce", min_prob, k)
  s = _base._stats(z, labels)
  return _base._masked(_rce_core(s, labels, log_zero, min_prob), where)


@_base._annotate("active", soft_labels=True)
def gce(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  axis: int | tuple[int, ...] | None = -1,
  where: jax.typing.ArrayLike | None = None,
  *,
  q: float = 0.7,
  min_prob: float | None = None,
) -> jax.Array:
  """Generalized cross entropy, GCE = sum_k q(k|x) (1 - p_k^q) / q = (1 - p_y^q) / q.

  Computed as -expm1(q log p_y) / q: no p^q at p = 0, finite gradients everywhere. q -> 0 gives CE,
  q = 1 gives 1 - p_y = MAE / 2 (for integer labels). Soft labels: the first form, with q(k|x) the
  given probabilities (the label-weighted sum of Zhang & Sabuncu's per-label L_q).

  Args:
    logits: [..., K] float scores.
    labels: [...] integer class ids, or [..., K] probabilities.
    q: exponent in (0, 1] (the paper's rho; 0.7 in its experiments).
    min_prob: if set, p_y is clamped to [min_prob, 1] first, as in the authors' code (1e-7);
      no gradient flows where the clamp is active. Default None = the paper's mathematics.
    axis: the class axis (see `cross_entropy`).
    where: optional bool mask [...] (see `cross_entropy`).

  Returns:
    [...] per-example loss in [0, 1/q].

  Example:
    >>> import jax.numpy as jnp
    >>> from aplx import losses
    >>> jnp.set_printoptions(precision=4)
    >>> logits, labels = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), jnp.array([0, 2])
    >>> print(losses.gce(logits, labels, q=0.7))
    [0.1601 0.9463]

  Reference: Zhang & Sabuncu, NeurIPS 2018; Ma et al. 2020, Section 5.3. Active (Section 5.3).
  """
  z, labels, k, where = _base._validate("gce", logits, labels, axis=axis, where=where, soft_labels=True)
  _base._check_range(
    "gce", "q", q, lo=0.0, hi=1.0, lo_open=True, fix="GCE needs 0 < q <= 1 (q -> 0 is CE, q = 1 is MAE/2)."
  )
  _base._check_min_prob("gce", min_prob, k)
  s = _base._stats(z, labels)
  clamp = (lambda lp: lp) if min_prob is None else (lambda lp: jnp.maximum(lp, jnp.log(min_prob)))
  return _base._masked(s.expect(lambda lp: -jnp.expm1(q * clamp(lp)) / q), where)


@_base._annotate("active+passive", soft_labels=True)
def sce(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  axis: int | tuple[int, ...] | None = -1,
  where: jax.typing.ArrayLike | None = None,
  *,
  alpha: float = 1.0,
  beta: float = 1.0,
  log_zero: float = -4.0,
  min_prob: float | None = None,
) -> jax.Array:
  """Symmetric cross entropy, SCE = alpha CE + beta RCE (soft labels: both terms' soft forms).

  Args:
    logits: [..., K] float scores.
    labels: [...] integer class ids, or [..., K] probabilities.
    alpha: weight of CE (paper: 0.01 MNIST, 0.1 CIFAR-10, 6.0 CIFAR-100).
    beta: weight of RCE (paper: 1.0, 1.0, 0.1).
    log_zero: A for RCE (see `rce`).
    min_prob: optional clamp of p inside RCE (see `rce`).
    axis: the class axis (see `cross_entropy`).
    where: optional bool mask [...] (see `cross_entropy`).

  Returns:
    [...] per-example loss.

  Example:
    >>> import jax.numpy as jnp
    >>> from aplx import losses
    >>> jnp.set_printoptions(precision=4)
    >>> logits, labels = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), jnp.array([0, 2])
    >>> print(losses.sce(logits, labels, alpha=0.1, beta=1.0))
    [0.6418 3.3074]

  Reference: Wang et al., ICCV 2019; Ma et al. 2020, Sections 3.1 and 5.2. CE is active, RCE
  passive.
  """
  z, labels, k, where = _base._validate("sce", logits, labels, axis=axis, where=where, soft_labels=True)
  _base._check_weights("sce", alpha=alpha, beta=beta)
  _base._check_log_zero("sce", log_zero)
  _base._check_min_prob("sce", min_prob, k)
  s = _base._stats(z, labels)
  value = alpha * s.expect(lambda lp: -lp) + beta * _rce_core(s, labels, log_zero, min_prob)
  return _base._masked(value, where)
