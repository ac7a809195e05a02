"""The base losses of Ma et al. (ICML 2020), Section 3.1 and 5.3: CE, FL, MAE, RCE, GCE, SCE.

All take `logits [..., K]` and integer `labels [...]` and return the per-example loss `[...]`
(float32, or float64 for float64 input). p = softmax(logits), y = label, q = one-hot(y).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from aplx.losses import _base

_PAPER = "Ma et al., 'Normalized Loss Functions for Deep Learning with Noisy Labels', ICML 2020"


def _rce_core(s: _base._Stats, labels, log_zero, min_prob) -> jax.Array:
  """-sum_k p_k log q_k with log q_y = 0 and log q_{k != y} = A: equals -A (1 - p_y)."""
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


@_base._annotate("active")
def cross_entropy(logits: jax.typing.ArrayLike, labels: jax.typing.ArrayLike) -> jax.Array:
  """Cross entropy, CE = -sum_k q_k log p_k = logsumexp(z) - z_y.

  Args:
    logits: [..., K] unnormalised scores (float16/bfloat16/float32/float64).
    labels: [...] integer class ids in [0, K).

  Returns:
    [...] per-example loss, float32 (float64 for float64 logits).

  Example:
    >>> cross_entropy(jnp.array([[2., 0.]]), jnp.array([0]))  # log(1 + e^-2) = 0.1269

  Reference: Ma et al. 2020, Section 3.1. Active (paper Table 1).
  """
  z, labels, _ = _base._validate("cross_entropy", logits, labels)
  s = _base._stats(z, labels)
  return -s.logp_y


@_base._annotate("active")
def focal_loss(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  gamma: float = 0.5,
  detach_focal_factor: bool = False,
) -> jax.Array:
  """Focal loss, FL = -sum_k q_k (1 - p_k)^gamma log p_k = -(1 - p_y)^gamma log p_y.

  Computed from log p_y: (1 - p_y)^gamma = exp(gamma * log(-expm1(log p_y))), finite with finite
  gradient for any logits; gamma = 0 is exactly CE.

  Args:
    logits: [..., K] float scores.
    labels: [...] integer class ids.
    gamma: focusing parameter, >= 0 (the paper uses 0.5).
    detach_focal_factor: if True, no gradient flows through (1 - p_y)^gamma, as in the authors'
      code (`pt = Variable(logpt.data.exp())`). Default False = the paper's mathematics.

  Returns:
    [...] per-example loss.

  Example:
    >>> focal_loss(logits, labels, gamma=0.5)

  Reference: Lin et al., ICCV 2017; Ma et al. 2020, Section 3.1. Active.
  """
  z, labels, _ = _base._validate("focal_loss", logits, labels)
  _base._check_range("focal_loss", "gamma", gamma, lo=0.0, fix="Use gamma >= 0 (0 = CE).")
  s = _base._stats(z, labels)
  return -_base._focal_factor(s.logp_y, gamma, detach_focal_factor) * s.logp_y


@_base._annotate("passive")
def mae(logits: jax.typing.ArrayLike, labels: jax.typing.ArrayLike, *, halved: bool = False) -> jax.Array:
  """Mean absolute error, MAE = sum_k |p_k - q_k| = 2 (1 - p_y).

  Args:
    logits: [..., K] float scores.
    labels: [...] integer class ids.
    halved: if True return 1 - p_y, the authors' "reduced MAE" (their code, and every published
      beta for *+MAE, uses this half-size MAE). Default False = the paper's definition.

  Returns:
    [...] per-example loss in [0, 2] ([0, 1] if halved).

  Example:
    >>> mae(logits, labels)             # paper: 2 (1 - p_y)
    >>> mae(logits, labels, halved=True)  # authors' code: 1 - p_y

  Reference: Ghosh et al., AAAI 2017; Ma et al. 2020, Section 3.1. Passive (paper Table 1).
  """
  z, labels, _ = _base._validate("mae", logits, labels)
  s = _base._stats(z, labels)
  scale = 1.0 if halved else 2.0
  return scale * _base._one_minus_exp(s.logp_y)


@_base._annotate("passive")
def rce(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  log_zero: float = -4.0,
  min_prob: float | None = None,
) -> jax.Array:
  """Reverse cross entropy, RCE = -sum_k p_k log q_k with log 0 := A (`log_zero`) = -A (1 - p_y).

  Args:
    logits: [..., K] float scores.
    labels: [...] integer class ids.
    log_zero: A < 0, the value given to log 0. The paper uses -4; the authors' code clamps the
      one-hot to [1e-4, 1], i.e. A = log(1e-4) = -9.2103 (`aplx.losses.AUTHORS_LOG_ZERO`).
    min_prob: if set, p is clamped to [min_prob, 1] before the sum over k != y, as in the authors'
      code (1e-7). Default None = the paper's mathematics (no clamp).

  Returns:
    [...] per-example loss in [0, -A].

  Example:
    >>> rce(logits, labels, log_zero=aplx.losses.AUTHORS_LOG_ZERO, min_prob=1e-7)  # authors

  Reference: Wang et al., 'Symmetric Cross Entropy for Robust Learning with Noisy Labels', ICCV
  2019; Ma et al. 2020, Section 3.1. Passive.
  """
  z, labels, k = _base._validate("rce", logits, labels)
  _base._check_log_zero("rce", log_zero)
  _base._check_min_prob("rce", min_prob, k)
  s = _base._stats(z, labels)
  return _rce_core(s, labels, log_zero, min_prob)


@_base._annotate("active")
def gce(
  logits: jax.typing.ArrayLike, labels: jax.typing.ArrayLike, *, q: float = 0.7, min_prob: float | None = None
) -> jax.Array:
  """Generalized cross entropy, GCE = sum_k q(k|x) (1 - p_k^q) / q = (1 - p_y^q) / q.

  Computed as -expm1(q log p_y) / q: no p^q at p = 0, finite gradients everywhere. q -> 0 gives CE,
  q = 1 gives 1 - p_y = MAE / 2.

  Args:
    logits: [..., K] float scores.
    labels: [...] integer class ids.
    q: exponent in (0, 1] (the paper's rho; 0.7 in its experiments).
    min_prob: if set, p_y is clamped to [min_prob, 1] first, as in the authors' code (1e-7);
      no gradient flows where the clamp is active. Default None = the paper's mathematics.

  Returns:
    [...] per-example loss in [0, 1/q].

  Example:
    >>> gce(logits, labels, q=0.7)

  Reference: Zhang & Sabuncu, NeurIPS 2018; Ma et al. 2020, Section 5.3. Active (Section 5.3).
  """
  z, labels, k = _base._validate("gce", logits, labels)
  _base._check_range(
    "gce", "q", q, lo=0.0, hi=1.0, lo_open=True, fix="GCE needs 0 < q <= 1 (q -> 0 is CE, q = 1 is MAE/2)."
  )
  _base._check_min_prob("gce", min_prob, k)
  s = _base._stats(z, labels)
  logp_y = s.logp_y if min_prob is None else jnp.maximum(s.logp_y, jnp.log(min_prob))
  return -jnp.expm1(q * logp_y) / q


@_base._annotate("active+passive")
def sce(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  alpha: float = 1.0,
  beta: float = 1.0,
  log_zero: float = -4.0,
  min_prob: float | None = None,
) -> jax.Array:
  """Symmetric cross entropy, SCE = alpha CE + beta RCE.

  Args:
    logits: [..., K] float scores.
    labels: [...] integer class ids.
    alpha: weight of CE (paper: 0.01 MNIST, 0.1 CIFAR-10, 6.0 CIFAR-100).
    beta: weight of RCE (paper: 1.0, 1.0, 0.1).
    log_zero: A for RCE (see `rce`).
    min_prob: optional clamp of p inside RCE (see `rce`).

  Returns:
    [...] per-example loss.

  Example:
    >>> sce(logits, labels, alpha=0.1, beta=1.0)

  Reference: Wang et al., ICCV 2019; Ma et al. 2020, Sections 3.1 and 5.2. CE is active, RCE
  passive.
  """
  z, labels, k = _base._validate("sce", logits, labels)
  _base._check_weights("sce", alpha=alpha, beta=beta)
  _base._check_log_zero("sce", log_zero)
  _base._check_min_prob("sce", min_prob, k)
  s = _base._stats(z, labels)
  return alpha * -s.logp_y + beta * _rce_core(s, labels, log_zero, min_prob)
