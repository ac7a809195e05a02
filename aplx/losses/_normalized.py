"""Normalized losses of Ma et al. (ICML 2020), Eq. (1)-(5) and Section 5.3, in closed form.

L_norm(f(x), y) = L(f(x), y) / sum_j L(f(x), j)  (Eq. 1). Each function below evaluates that ratio
without K evaluations of the base loss; `aplx.losses.normalize` does the generic (K-evaluation)
version and the tests check that the two agree.

Soft labels q [..., K]: the expectation of Eq. (1) over y ~ q, sum_k q_k L(f(x), k) / sum_j L(f(x), j)
(linear in q, so one-hot q gives Eq. (1), and the K values still sum to 1). For CE this is also
CE(q) / sum_j CE(j); for MAE and RCE it is not MAE(q) / sum_j MAE(j) (their soft forms are not
linear in q).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from aplx.losses import _base, _classic


@_base._annotate("active", soft_labels=True)
def nce(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  axis: int | tuple[int, ...] | None = -1,
  where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  """Normalized cross entropy, NCE = log p_y / sum_k log p_k  (Eq. 2).

  The denominator uses sum_k log p_k = sum_k z_k - K logsumexp(z) (no per-logit log); it is
  <= -K log K < 0, so the ratio is always defined, in [0, 1], and sums to 1 over the K labels.
  Soft labels: sum_k q_k log p_k / sum_j log p_j (the expectation of Eq. 1 over y ~ q).

  Args:
    logits: [..., K] float scores.
    labels: [...] integer class ids, or [..., K] probabilities.
    axis: the class axis (see `cross_entropy`).
    where: optional bool mask [...]; False entries give 0 loss and exactly 0 gradient.

  Returns:
    [...] per-example loss in [0, 1].

  Example:
    >>> import jax.numpy as jnp
    >>> from aplx import losses
    >>> jnp.set_printoptions(precision=4)
    >>> logits, labels = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), jnp.array([0, 2])
    >>> print(losses.nce(logits, labels))
    [0.0308 0.4245]

  Reference: Ma et al. 2020, Eq. (2). Active (Table 1).
  """
  z, labels, _, where = _base._validate("nce", logits, labels, axis=axis, where=where, soft_labels=True)
  s = _base._stats(z, labels)
  return _base._masked(s.expect(lambda lp: lp) / s.sum_logp(), where)


@_base._annotate("active", soft_labels=True)
def nfl(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  axis: int | tuple[int, ...] | None = -1,
  where: jax.typing.ArrayLike | None = None,
  *,
  gamma: float = 0.5,
  detach_focal_factor: bool = False,
  stop_gradient_normalizer: bool = False,
) -> jax.Array:
  """Normalized focal loss, NFL = FL_y / sum_k FL_k, FL_k = -(1 - p_k)^gamma log p_k  (Eq. 5).

  Soft labels: sum_k q_k FL_k / sum_j FL_j.

  Args:
    logits: [..., K] float scores.
    labels: [...] integer class ids, or [..., K] probabilities.
    gamma: focusing parameter >= 0 (the paper uses 0.5); gamma = 0 is NCE.
    detach_focal_factor: no gradient through any focal factor (1 - p_k)^gamma, in the numerator
      and in the denominator; log p keeps its gradient everywhere. This is the authors' code
      (`(1 - logpt.data.exp()) ** gamma * logpt`); set it to reproduce the published runs.
    stop_gradient_normalizer: no gradient through the whole denominator sum_k FL_k (not what the
      authors' code does; an option for ablations). Both default to False = the paper's
      mathematics.
    axis: the class axis (see `cross_entropy`).
    where: optional bool mask [...] (see `cross_entropy`).

  Returns:
    [...] per-example loss in [0, 1].

  Example:
    >>> import jax.numpy as jnp
    >>> from aplx import losses
    >>> jnp.set_printoptions(precision=4)
    >>> logits, labels = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), jnp.array([0, 2])
    >>> print(losses.nfl(logits, labels, gamma=0.5))
    [0.0129 0.4423]

  Reference: Ma et al. 2020, Eq. (5). Active (Table 1).
  """
  z, labels, _, where = _base._validate("nfl", logits, labels, axis=axis, where=where, soft_labels=True)
  _base._check_range("nfl", "gamma", gamma, lo=0.0, fix="Use gamma >= 0 (0 = NCE).")
  if jnp.issubdtype(labels.dtype, jnp.integer) and _base._is_static(gamma):
    # Python gamma, integer labels: the denominator's JVP by hand (~2-3x CE's cost instead of ~5x).
    lse, den = _base._lse_and_sum(z, _base._focal_term(gamma, detach_focal_factor))
    logp_y = _base._gather(z, labels) - lse
    num = -_base._focal_factor(logp_y, gamma, detach_focal_factor) * logp_y
  else:
    s = _base._stats(z, labels)
    fl_all = -_base._focal_factor(s.logp, gamma, detach_focal_factor) * s.logp
    den = jnp.sum(fl_all, axis=-1)
    if s.q is None:
      num = -_base._focal_factor(s.logp_y, gamma, detach_focal_factor) * s.logp_y
    else:
      num = jnp.sum(s.q * fl_all, axis=-1)
  if stop_gradient_normalizer:
    den = jax.lax.stop_gradient(den)
  # On the fast path the numerator and the denominator's y-term round differently (up to ~4e-6
  # relative, K = 2 and logits ~100): the value is kept in [0, 1], the gradient left as the ratio's.
  ratio = num / den
  return _base._masked(ratio - jax.lax.stop_gradient(jnp.maximum(ratio - 1.0, 0.0)), where)


@_base._annotate("passive", soft_labels=True)
def nmae(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  axis: int | tuple[int, ...] | None = -1,
  where: jax.typing.ArrayLike | None = None,
  *,
  halved: bool = False,
) -> jax.Array:
  """Normalized MAE, NMAE = MAE / sum_j MAE_j = (1 - p_y) / (K - 1) = MAE / (2 (K - 1))  (Eq. 3).

  Soft labels: sum_k q_k MAE_k / sum_j MAE_j = (1 - sum_k q_k p_k) / (K - 1) (the expectation of Eq. 3
  over y ~ q; not MAE(q) / (2 (K - 1))).

  Args:
    logits: [..., K] float scores.
    labels: [...] integer class ids, or [..., K] probabilities.
    halved: if True return (1 - p_y) / (2 (K - 1)), the authors' code (their reduced MAE divided
      by 2 (K - 1)). Default False = the paper's Eq. (3).
    axis: the class axis (see `cross_entropy`).
    where: optional bool mask [...] (see `cross_entropy`).

  Returns:
    [...] per-example loss in [0, 1/(K-1)].

  Example:
    >>> import jax.numpy as jnp
    >>> from aplx import losses
    >>> jnp.set_printoptions(precision=4)
    >>> logits, labels = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), jnp.array([0, 2])
    >>> print(losses.nmae(logits, labels))
    [0.0781 0.394 ]

  Reference: Ma et al. 2020, Eq. (3). Passive (Table 1).
  """
  z, labels, k, where = _base._validate("nmae", logits, labels, axis=axis, where=where, soft_labels=True)
  s = _base._stats(z, labels)
  den = 2.0 * (k - 1) if halved else float(k - 1)
  return _base._masked(s.expect(_base._one_minus_exp) / den, where)


@_base._annotate("passive", soft_labels=True)
def nrce(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  axis: int | tuple[int, ...] | None = -1,
  where: jax.typing.ArrayLike | None = None,
  *,
  log_zero: float = -4.0,
  min_prob: float | None = None,
  authors_normalizer: bool = False,
) -> jax.Array:
  """Normalized RCE, NRCE = RCE / sum_j RCE_j = RCE / (-A (K - 1)) = (1 - p_y) / (K - 1)  (Eq. 4).

  With the paper's mathematics the result does not depend on A. Soft labels: sum_k q_k RCE_k over
  the same normalizer (the expectation over y ~ q): (1 - sum_k q_k p_k) / (K - 1); with `min_prob`,
  RCE_k = -A sum_(j != k) clamp(p_j), so the numerator is -A sum_j clamp(p_j) (1 - q_j).

  Args:
    logits: [..., K] float scores.
    labels: [...] integer class ids, or [..., K] probabilities.
    log_zero: A < 0 for the inner RCE (see `rce`).
    min_prob: optional clamp of p inside RCE (see `rce`; authors: 1e-7).
    authors_normalizer: if True multiply RCE by (K - 1) / 4 instead of dividing by -A (K - 1): the
      authors' code writes `1 / 4 * (K - 1)` (operator precedence). Default False.
    axis: the class axis (see `cross_entropy`).
    where: optional bool mask [...] (see `cross_entropy`).

  Returns:
    [...] per-example loss; in [0, 1/(K-1)] with the paper's mathematics.

  Example:
    >>> import jax.numpy as jnp
    >>> from aplx import losses
    >>> jnp.set_printoptions(precision=4)
    >>> logits, labels = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), jnp.array([0, 2])
    >>> print(losses.nrce(logits, labels))  # = nmae: independent of A
    [0.0781 0.394 ]

  Reference: Ma et al. 2020, Eq. (4). Passive (Table 1).
  """
  z, labels, k, where = _base._validate("nrce", logits, labels, axis=axis, where=where, soft_labels=True)
  _base._check_log_zero("nrce", log_zero)
  _base._check_min_prob("nrce", min_prob, k)
  s = _base._stats(z, labels)
  if s.q is None:
    rce_v = _classic._rce_core(s, labels, log_zero, min_prob)
  elif min_prob is None:
    rce_v = -log_zero * s.expect(_base._one_minus_exp)
  else:
    p_c = jnp.exp(jnp.maximum(s.logp, jnp.log(min_prob)))
    rce_v = -log_zero * jnp.sum(p_c * (1.0 - s.q), axis=-1)
  if authors_normalizer:
    return _base._masked(rce_v * ((k - 1) / 4.0), where)
  return _base._masked(rce_v / (-log_zero * (k - 1)), where)


@_base._annotate("active", soft_labels=True)
def ngce(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  axis: int | tuple[int, ...] | None = -1,
  where: jax.typing.ArrayLike | None = None,
  *,
  q: float = 0.7,
  min_prob: float | None = None,
) -> jax.Array:
  """Normalized GCE, NGCE = (1 - p_y^q) / (K - sum_k p_k^q)  (Section 5.3).

  p_k^q = exp(q log p_k): one exp per logit, no power of a zero probability. The denominator is
  >= K - K^(1-q) > 0. Soft labels (probabilities w): sum_k w_k (1 - p_k^q) / (K - sum_j p_j^q).

  Args:
    logits: [..., K] float scores.
    labels: [...] integer class ids, or [..., K] probabilities.
    q: exponent in (0, 1] (the authors use 0.1 for MNIST/CIFAR-10, 0.7 for CIFAR-100).
    min_prob: if set, p is clamped to [min_prob, 1] first (authors' code: 1e-7).
    axis: the class axis (see `cross_entropy`).
    where: optional bool mask [...] (see `cross_entropy`).

  Returns:
    [...] per-example loss in [0, 1].

  Example:
    >>> import jax.numpy as jnp
    >>> from aplx import losses
    >>> jnp.set_printoptions(precision=4)
    >>> logits, labels = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), jnp.array([0, 2])
    >>> print(losses.ngce(logits, labels, q=0.7))
    [0.0628 0.4027]

  Reference: Ma et al. 2020, Section 5.3. Active (Section 5.3).
  """
  z, labels, k, where = _base._validate("ngce", logits, labels, axis=axis, where=where, soft_labels=True)
  _base._check_range("ngce", "q", q, lo=0.0, hi=1.0, lo_open=True, fix="NGCE needs 0 < q <= 1.")
  _base._check_min_prob("ngce", min_prob, k)
  clamp = (lambda lp: lp) if min_prob is None else (lambda lp: jnp.maximum(lp, jnp.log(min_prob)))
  static = _base._is_static(q) and (min_prob is None or _base._is_static(min_prob))
  if jnp.issubdtype(labels.dtype, jnp.integer) and static:
    # Python q, integer labels: the denominator's JVP by hand (~2x CE's cost instead of ~3x).

    def term(z, lse, p):
      del p
      logp = z - lse[..., None]
      power = jnp.exp(q * clamp(logp))
      total = jnp.sum(power, axis=-1)
      if min_prob is None:
        return total, power, total, q
      return total, jnp.where(logp > jnp.log(min_prob), power, 0.0), None, q

    lse, total = _base._lse_and_sum(z, term)
    num = -jnp.expm1(q * clamp(_base._gather(z, labels) - lse))
  else:
    s = _base._stats(z, labels)
    num = s.expect(lambda lp: -jnp.expm1(q * clamp(lp)))
    total = jnp.sum(jnp.exp(q * clamp(s.logp)), axis=-1)  # exp vectorises on XLA:CPU, expm1 does not
  return _base._masked(num / (k - total), where)
