"""Robust losses beside Ma et al. (2020), same API: ANL, asymmetric losses, Poly-1, Taylor CE,
epsilon-softmax CE, NLNL's negative-learning term, and DMI (a batch-level loss).

Each docstring gives the source and the formula as checked against the paper and the authors'
public code; differences between the two are keyword options whose default is the paper. All take
`axis` and `where` as the losses of Ma et al. do; only `poly1` takes soft labels (the others are
defined for integer labels only and raise a TypeError for probabilities).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from aplx.losses import _base, _normalized

# ----------------------------------------------------------------------------------------------------
# Active Negative Loss (Ye et al., NeurIPS 2023)
# ----------------------------------------------------------------------------------------------------


def _nnce_core(s: _base._Stats, labels, min_prob) -> jax.Array:
  log_mp = math.log(min_prob)
  a = -log_mp
  lc = jnp.maximum(s.logp, log_mp)
  lc_y = jnp.maximum(s.logp_y, log_mp)
  return 1.0 - (a + lc_y) / (s.num_classes * a + jnp.sum(lc, axis=-1))


def _nnfl_core(
  s: _base._Stats, labels, gamma, min_prob, detach_focal_factor, stop_gradient_normalizer
) -> jax.Array:
  log_mp = math.log(min_prob)
  a = -((1.0 - min_prob) ** gamma) * log_mp  # FL at p = min_prob
  lc = jnp.maximum(s.logp, log_mp)
  lc_y = jnp.maximum(s.logp_y, log_mp)
  fl_all = -_base._focal_factor(lc, gamma, detach_focal_factor) * lc
  den = s.num_classes * a - jnp.sum(fl_all, axis=-1)
  if stop_gradient_normalizer:
    den = jax.lax.stop_gradient(den)
  fl_y = -_base._focal_factor(lc_y, gamma, detach_focal_factor) * lc_y
  return 1.0 - (a - fl_y) / den


@_base._annotate("passive")
def nnce(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  axis: int | tuple[int, ...] | None = -1,
  where: jax.typing.ArrayLike | None = None,
  *,
  min_prob: float = 1e-7,
) -> jax.Array:
  """Normalized negative cross entropy (ANL), NNCE = 1 - (A + log p_y) / sum_k (A + log p_k).

  log p is clamped at log(min_prob) and A = -log(min_prob), so every A + log p_k is in [0, A].
  ANL calls it a "negative" loss; it plays the passive role (it pushes down p_k for k != y).

  Args:
    logits: [..., K] float scores.
    labels: [...] integer class ids (soft labels: TypeError; ANL defines it for a label y).
    min_prob: the clamp (ANL: 1e-7); must satisfy min_prob * K < 1.
    axis: the class axis of `logits` (e.g. 1 for NCHW logits [B, K, H, W] with labels [B, H, W]), or a
      tuple of axes (see `cross_entropy`).
    where: optional bool mask [...]; False entries give 0 loss and exactly 0 gradient.

  Returns:
    [...] per-example loss in [0, 1].

  Example:
    >>> import jax.numpy as jnp
    >>> from aplx import losses
    >>> jnp.set_printoptions(precision=4)
    >>> logits, labels = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), jnp.array([0, 2])
    >>> print(losses.nnce(logits, labels))
    [0.6278 0.6741]

  Reference: Ye et al., 'Active Negative Loss Functions for Learning with Noisy Labels', NeurIPS
  2023, Eq. for NNCE; official code Virusdoll/Active-Negative-Loss `NormalizedNegativeCrossEntropy`.
  """
  z, labels, k, where = _base._validate("nnce", logits, labels, axis=axis, where=where)
  _base._check_min_prob("nnce", min_prob, k)
  s = _base._stats(z, labels)
  return _base._masked(_nnce_core(s, labels, min_prob), where)


@_base._annotate("passive")
def nnfl(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  axis: int | tuple[int, ...] | None = -1,
  where: jax.typing.ArrayLike | None = None,
  *,
  gamma: float = 0.5,
  min_prob: float = 1e-7,
  detach_focal_factor: bool = False,
  stop_gradient_normalizer: bool = False,
) -> jax.Array:
  """Normalized negative focal loss (ANL), NNFL = 1 - (A - FL_y) / sum_k (A - FL_k).

  FL_k = -(1 - p_k)^gamma log p_k with log p clamped at log(min_prob), A = FL at p = min_prob.

  Args:
    logits: [..., K] float scores.
    labels: [...] integer class ids (soft labels: TypeError; ANL defines it for a label y).
    gamma: focusing parameter >= 0.
    min_prob: the clamp (ANL: 1e-7).
    detach_focal_factor: no gradient through any focal factor (1 - p_k)^gamma, in the numerator
      and in the normalizer; log p keeps its gradient everywhere. This is the official ANL code
      (`(1 - pt.data.exp()) ** gamma` / `(1 - logpt.data.exp()) ** gamma`, clamped log p live); set it
      to reproduce the published runs.
    stop_gradient_normalizer: no gradient through the whole normalizer (an ablation; not the
      official code). Both default to False = the paper's mathematics.
    axis: the class axis of `logits` (e.g. 1 for NCHW logits [B, K, H, W] with labels [B, H, W]), or a
      tuple of axes (see `cross_entropy`).
    where: optional bool mask [...]; False entries give 0 loss and exactly 0 gradient.

  Returns:
    [...] per-example loss in [0, 1].

  Example:
    >>> import jax.numpy as jnp
    >>> from aplx import losses
    >>> jnp.set_printoptions(precision=4)
    >>> logits, labels = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), jnp.array([0, 2])
    >>> print(losses.nnfl(logits, labels, gamma=0.5))
    [0.628  0.6742]

  Reference: Ye et al., NeurIPS 2023; official code `NormalizedNegativeFocalLoss`.
  """
  z, labels, k, where = _base._validate("nnfl", logits, labels, axis=axis, where=where)
  _base._check_range("nnfl", "gamma", gamma, lo=0.0, fix="Use gamma >= 0.")
  _base._check_min_prob("nnfl", min_prob, k)
  s = _base._stats(z, labels)
  value = _nnfl_core(s, labels, gamma, min_prob, detach_focal_factor, stop_gradient_normalizer)
  return _base._masked(value, where)


@_base._annotate("active+passive")
def anl_ce(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  axis: int | tuple[int, ...] | None = -1,
  where: jax.typing.ArrayLike | None = None,
  *,
  alpha: float = 1.0,
  beta: float = 1.0,
  min_prob: float = 1e-7,
) -> jax.Array:
  """ANL-CE = alpha NCE + beta NNCE.

  The ANL paper also adds an L1 penalty delta * ||theta||_1 on the weights; that belongs to the
  training configuration (`config.optim.l1`), not to this per-example loss. `axis` and `where` as
  in `nnce`; integer labels only (soft labels: TypeError).

  Example:
    >>> import jax.numpy as jnp
    >>> from aplx import losses
    >>> jnp.set_printoptions(precision=4)
    >>> logits, labels = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), jnp.array([0, 2])
    >>> print(losses.anl_ce(logits, labels, alpha=5.0, beta=5.0))
    [3.293  5.4934]

  Reference: Ye et al., NeurIPS 2023 (ANL-CE; e.g. CIFAR-10 alpha = beta = 5).
  """
  z, labels, k, where = _base._validate("anl_ce", logits, labels, axis=axis, where=where)
  _base._check_weights("anl_ce", alpha=alpha, beta=beta)
  _base._check_min_prob("anl_ce", min_prob, k)
  s = _base._stats(z, labels)
  value = alpha * (s.logp_y / s.sum_logp()) + beta * _nnce_core(s, labels, min_prob)
  return _base._masked(value, where)


@_base._annotate("active+passive")
def anl_fl(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  axis: int | tuple[int, ...] | None = -1,
  where: jax.typing.ArrayLike | None = None,
  *,
  alpha: float = 1.0,
  beta: float = 1.0,
  gamma: float = 0.5,
  min_prob: float = 1e-7,
  detach_focal_factor: bool = False,
  stop_gradient_normalizer: bool = False,
) -> jax.Array:
  """ANL-FL = alpha NFL + beta NNFL (same gamma and detach options for both terms).

  `detach_focal_factor=True` is the official code in both terms: every focal factor detached, in
  numerators and normalizers, log p live. `axis` and `where` as in `nnce`; integer labels only.

  Example:
    >>> import jax.numpy as jnp
    >>> from aplx import losses
    >>> jnp.set_printoptions(precision=4)
    >>> logits, labels = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), jnp.array([0, 2])
    >>> print(losses.anl_fl(logits, labels, alpha=5.0, beta=5.0))
    [3.2042 5.5826]

  Reference: Ye et al., NeurIPS 2023 (ANL-FL). The L1 weight penalty belongs to the training config
  (`config.optim.l1`).
  """
  z, labels, k, where = _base._validate("anl_fl", logits, labels, axis=axis, where=where)
  _base._check_weights("anl_fl", alpha=alpha, beta=beta)
  _base._check_min_prob("anl_fl", min_prob, k)
  active = _normalized.nfl(
    z,
    labels,
    gamma=gamma,
    detach_focal_factor=detach_focal_factor,
    stop_gradient_normalizer=stop_gradient_normalizer,
  )
  passive = nnfl(
    z,
    labels,
    gamma=gamma,
    min_prob=min_prob,
    detach_focal_factor=detach_focal_factor,
    stop_gradient_normalizer=stop_gradient_normalizer,
  )
  return _base._masked(alpha * active + beta * passive, where)


# ----------------------------------------------------------------------------------------------------
# Asymmetric losses (Zhou et al., ICML 2021)
# ----------------------------------------------------------------------------------------------------


@_base._annotate("active")
def agce(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  axis: int | tuple[int, ...] | None = -1,
  where: jax.typing.ArrayLike | None = None,
  *,
  a: float = 0.6,
  q: float = 0.6,
) -> jax.Array:
  """Asymmetric generalized cross entropy, AGCE = ((a + 1)^q - (a + p_y)^q) / q.

  Args:
    logits: [..., K] float scores.
    labels: [...] integer class ids (soft labels: TypeError; defined on p_y).
    a: > 0. q: > 0. (Defaults: the CIFAR-10 values of the official configs.)
    axis: the class axis of `logits` (e.g. 1 for NCHW logits [B, K, H, W] with labels [B, H, W]), or a
      tuple of axes (see `cross_entropy`).
    where: optional bool mask [...]; False entries give 0 loss and exactly 0 gradient.

  Returns:
    [...] per-example loss in [0, ((a+1)^q - a^q)/q].

  Example:
    >>> import jax.numpy as jnp
    >>> from aplx import losses
    >>> jnp.set_printoptions(precision=4)
    >>> logits, labels = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), jnp.array([0, 2])
    >>> print(losses.agce(logits, labels, a=0.6, q=0.6))
    [0.1321 0.7388]

  Reference: Zhou et al., 'Asymmetric Loss Functions for Learning with Noisy Labels', ICML 2021;
  official code hitcszx/ALFs `AGCELoss`. A function of p_y only, hence active (Ma et al. Def. 1).
  """
  z, labels, _, where = _base._validate("agce", logits, labels, axis=axis, where=where)
  _base._check_range("agce", "a", a, lo=0.0, lo_open=True, fix="AGCE needs a > 0.")
  _base._check_range("agce", "q", q, lo=0.0, lo_open=True, fix="AGCE needs q > 0.")
  s = _base._stats(z, labels)
  p_y = jnp.exp(s.logp_y)
  return _base._masked(((a + 1.0) ** q - jnp.exp(q * jnp.log(a + p_y))) / q, where)


@_base._annotate("active")
def aul(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  axis: int | tuple[int, ...] | None = -1,
  where: jax.typing.ArrayLike | None = None,
  *,
  a: float = 5.5,
  q: float = 3.0,
) -> jax.Array:
  """Asymmetric unhinged loss, AUL = ((a - p_y)^q - (a - 1)^q) / q.

  Args:
    logits: [..., K] float scores.
    labels: [...] integer class ids (soft labels: TypeError; defined on p_y).
    a: > 1 (so that a - p_y > 0 and the gradient is finite). q: > 0.
    axis: the class axis of `logits` (e.g. 1 for NCHW logits [B, K, H, W] with labels [B, H, W]), or a
      tuple of axes (see `cross_entropy`).
    where: optional bool mask [...]; False entries give 0 loss and exactly 0 gradient.

  Returns:
    [...] per-example loss.

  Example:
    >>> import jax.numpy as jnp
    >>> from aplx import losses
    >>> jnp.set_printoptions(precision=4)
    >>> logits, labels = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), jnp.array([0, 2])
    >>> print(losses.aul(logits, labels, a=5.5, q=3.0))
    [ 3.2742 18.916 ]

  Reference: Zhou et al., ICML 2021; official code `AUELoss`. Active.
  """
  z, labels, _, where = _base._validate("aul", logits, labels, axis=axis, where=where)
  _base._check_range("aul", "a", a, lo=1.0, lo_open=True, fix="AUL needs a > 1.")
  _base._check_range("aul", "q", q, lo=0.0, lo_open=True, fix="AUL needs q > 0.")
  s = _base._stats(z, labels)
  p_y = jnp.exp(s.logp_y)
  return _base._masked((jnp.exp(q * jnp.log(a - p_y)) - (a - 1.0) ** q) / q, where)


@_base._annotate("active")
def ael(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  axis: int | tuple[int, ...] | None = -1,
  where: jax.typing.ArrayLike | None = None,
  *,
  a: float = 2.5,
) -> jax.Array:
  """Asymmetric exponential loss, AEL = exp(-p_y / a).

  Args:
    logits: [..., K] float scores.
    labels: [...] integer class ids (soft labels: TypeError; defined on p_y).
    a: > 0.
    axis: the class axis of `logits` (e.g. 1 for NCHW logits [B, K, H, W] with labels [B, H, W]), or a
      tuple of axes (see `cross_entropy`).
    where: optional bool mask [...]; False entries give 0 loss and exactly 0 gradient.

  Returns:
    [...] per-example loss in [exp(-1/a), 1].

  Example:
    >>> import jax.numpy as jnp
    >>> from aplx import losses
    >>> jnp.set_printoptions(precision=4)
    >>> logits, labels = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), jnp.array([0, 2])
    >>> print(losses.ael(logits, labels, a=2.5))
    [0.7135 0.9187]

  Reference: Zhou et al., ICML 2021; official code `AExpLoss`. Active.
  """
  z, labels, _, where = _base._validate("ael", logits, labels, axis=axis, where=where)
  _base._check_range("ael", "a", a, lo=0.0, lo_open=True, fix="AEL needs a > 0.")
  s = _base._stats(z, labels)
  return _base._masked(jnp.exp(-jnp.exp(s.logp_y) / a), where)


# ----------------------------------------------------------------------------------------------------
# Poly-1, Taylor CE, epsilon-softmax
# ----------------------------------------------------------------------------------------------------


@_base._annotate("active", soft_labels=True)
def poly1(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  axis: int | tuple[int, ...] | None = -1,
  where: jax.typing.ArrayLike | None = None,
  *,
  epsilon: float = 1.0,
) -> jax.Array:
  """Poly-1 loss, CE + epsilon (1 - p_y).

  Soft labels: -sum_k q_k log p_k + epsilon (1 - sum_k q_k p_k) = sum_k q_k Poly1(f, k), which is what
  Leng et al.'s code listing computes (pt = sum(labels * softmax(logits))) for probability labels.

  Args:
    logits: [..., K] float scores.
    labels: [...] integer class ids, or [..., K] probabilities.
    epsilon: >= -1 (the loss stays non-negative and monotone).
    axis: the class axis of `logits` (e.g. 1 for NCHW logits [B, K, H, W] with labels [B, H, W]), or a
      tuple of axes (see `cross_entropy`).
    where: optional bool mask [...]; False entries give 0 loss and exactly 0 gradient.

  Example:
    >>> import jax.numpy as jnp
    >>> from aplx import losses
    >>> jnp.set_printoptions(precision=4)
    >>> logits, labels = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), jnp.array([0, 2])
    >>> print(losses.poly1(logits, labels, epsilon=1.0))
    [0.3261 2.3395]

  Reference: Leng et al., 'PolyLoss: A Polynomial Expansion Perspective of Classification Loss
  Functions', ICLR 2022, Eq. (3). Active.
  """
  z, labels, _, where = _base._validate("poly1", logits, labels, axis=axis, where=where, soft_labels=True)
  _base._check_range("poly1", "epsilon", epsilon, lo=-1.0, fix="Poly-1 needs epsilon >= -1.")
  s = _base._stats(z, labels)
  return _base._masked(s.expect(lambda lp: -lp + epsilon * _base._one_minus_exp(lp)), where)


@_base._annotate("active")
def taylor_ce(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  axis: int | tuple[int, ...] | None = -1,
  where: jax.typing.ArrayLike | None = None,
  *,
  order: int = 2,
) -> jax.Array:
  """Taylor cross entropy, sum_{j=1..t} (1 - p_y)^j / j (CE's Taylor series at p_y = 1, cut at t).

  t = 1 is 1 - p_y = MAE / 2; t -> infinity is CE.

  Args:
    logits: [..., K] float scores.
    labels: [...] integer class ids (soft labels: TypeError; a series in 1 - p_y).
    order: t, an integer >= 1.
    axis: the class axis of `logits` (e.g. 1 for NCHW logits [B, K, H, W] with labels [B, H, W]), or a
      tuple of axes (see `cross_entropy`).
    where: optional bool mask [...]; False entries give 0 loss and exactly 0 gradient.

  Example:
    >>> import jax.numpy as jnp
    >>> from aplx import losses
    >>> jnp.set_printoptions(precision=4)
    >>> logits, labels = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), jnp.array([0, 2])
    >>> print(losses.taylor_ce(logits, labels, order=2))
    [0.1684 1.0986]

  Reference: Feng et al., 'Can Cross Entropy Loss Be Robust to Label Noise?', IJCAI 2020. Active.
  """
  z, labels, _, where = _base._validate("taylor_ce", logits, labels, axis=axis, where=where)
  if isinstance(order, bool) or not isinstance(order, int) or order < 1:
    raise ValueError(f"taylor_ce: `order` must be a Python int >= 1, got {order!r}.")
  s = _base._stats(z, labels)
  u = _base._one_minus_exp(s.logp_y)
  acc = jnp.zeros_like(u)
  for j in range(order, 0, -1):  # Horner: u (1 + u (1/2 + u (1/3 + ...)))
    acc = u * (1.0 / j + acc)
  return _base._masked(acc, where)


@_base._annotate("active")
def ce_eps(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  axis: int | tuple[int, ...] | None = -1,
  where: jax.typing.ArrayLike | None = None,
  *,
  m: float = 1e5,
  min_prob: float | None = None,
) -> jax.Array:
  """CE on the epsilon-softmax output: p'_k = (p_k + m [k = argmax p]) / (1 + m), CE = -log p'_y.

  In log space: -log p'_y = log(1 + m) - (log(p_y + m) if y = argmax else log p_y). No gradient
  flows through the argmax (it is piecewise constant).

  Args:
    logits: [..., K] float scores.
    labels: [...] integer class ids (soft labels: TypeError; the argmax test compares with y).
    m: >= 0 (m = 0 is CE; the official CIFAR-10 symmetric config uses 1e5).
    min_prob: if set, p'_y is clamped to [min_prob, 1] (official code: 1e-8, which bounds the
      loss by -log(min_prob)). Default None = the paper's formula.
    axis: the class axis of `logits` (e.g. 1 for NCHW logits [B, K, H, W] with labels [B, H, W]), or a
      tuple of axes (see `cross_entropy`).
    where: optional bool mask [...]; False entries give 0 loss and exactly 0 gradient.

  Example:
    >>> import jax.numpy as jnp
    >>> from aplx import losses
    >>> jnp.set_printoptions(precision=4)
    >>> logits, labels = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), jnp.array([0, 2])
    >>> print(losses.ce_eps(logits, labels, m=1e5))
    [1.9073e-06 1.3064e+01]

  Reference: Wang et al., 'epsilon-Softmax: Approximating One-Hot Vectors for Mitigating Label
  Noise', NeurIPS 2024; official code cswjl/eps-softmax `ECELoss`. Active.
  """
  z, labels, k, where = _base._validate("ce_eps", logits, labels, axis=axis, where=where)
  _base._check_range("ce_eps", "m", m, lo=0.0, fix="epsilon-softmax needs m >= 0.")
  _base._check_min_prob("ce_eps", min_prob, k)
  s = _base._stats(z, labels)
  is_max = jnp.argmax(z, axis=-1) == labels
  log_num = jnp.where(is_max, jnp.log(jnp.exp(s.logp_y) + m), s.logp_y)
  logp_eps = log_num - math.log1p(m)
  if min_prob is not None:
    logp_eps = jnp.maximum(logp_eps, math.log(min_prob))
  return _base._masked(-logp_eps, where)


# ----------------------------------------------------------------------------------------------------
# NLNL (Kim et al., ICCV 2019)
# ----------------------------------------------------------------------------------------------------


@_base._annotate("passive", needs_key=True)
def nlnl(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  axis: int | tuple[int, ...] | None = -1,
  where: jax.typing.ArrayLike | None = None,
  *,
  key: jax.Array,
  num_negatives: int = 1,
  reduce_negatives: str = "sum",
  class_weight: jax.typing.ArrayLike | None = None,
  min_prob: float | None = None,
) -> jax.Array:
  """NLNL's negative-learning term, -sum_n log(1 - p_ybar_n) over random complementary labels ybar_n != y.

  ybar is drawn uniformly from the K - 1 other classes with `key` (as (y + U{1..K-1}) mod K).
  log(1 - p_ybar) is a logsumexp over the logits without ybar minus logsumexp(z): exact and
  finite even when p_ybar rounds to 1.

  Args:
    logits: [..., K] float scores.
    labels: [...] integer class ids (soft labels: TypeError; complementary labels are drawn from y).
    key: a PRNG key (required). In a train step pass `jax.random.fold_in(step_key, step)`;
      `aplx.losses.get('nlnl').needs_key` is True so a trainer knows to pass it.
    num_negatives: complementary labels per example (official `ln_neg`, drawn independently, with
      repetition, as the official code does).
    reduce_negatives: "sum" (default): one negative-learning term per complementary label, summed,
      as Kim et al.'s code does (`loss_neg * (B * ln_neg) / B`); "mean" divides by `num_negatives`
      (the loss scale then does not grow with it; not the official scale).
    class_weight: optional [K] weights, applied as class_weight[y] (the official code uses
      max-count / count per class of the noisy training labels).
    min_prob: if set, 1 - p_ybar is clamped to [min_prob, 1] (official code: 1e-5).
    axis: the class axis of `logits` (e.g. 1 for NCHW logits [B, K, H, W] with labels [B, H, W]), or a
      tuple of axes (see `cross_entropy`).
    where: optional bool mask [...]; False entries give 0 loss and exactly 0 gradient.

  Returns:
    [...] per-example loss (NaN for out-of-range labels).

  Example:
    >>> import jax.numpy as jnp
    >>> from aplx import losses
    >>> jnp.set_printoptions(precision=4)
    >>> logits, labels = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), jnp.array([0, 2])
    >>> import jax
    >>> losses.nlnl(logits, labels, key=jax.random.key(0)).shape
    (2,)

  Reference: Kim et al., 'NLNL: Negative Learning for Noisy Labels', ICCV 2019, Eq. (2) (only the
  negative-learning stage; the 3-stage schedule belongs to the trainer). Passive.
  """
  z, labels, k, where = _base._validate("nlnl", logits, labels, axis=axis, where=where)
  if isinstance(num_negatives, bool) or not isinstance(num_negatives, int) or num_negatives < 1:
    raise ValueError(f"nlnl: `num_negatives` must be a Python int >= 1, got {num_negatives!r}.")
  if reduce_negatives not in ("sum", "mean"):
    raise ValueError(
      f"nlnl: `reduce_negatives` must be 'sum' (official) or 'mean', got {reduce_negatives!r}."
    )
  _base._check_min_prob("nlnl", min_prob, k)
  if class_weight is not None:
    w = jnp.asarray(class_weight)
    expected = f"[K] = ({k},)" if _base._knows_k() else "[K]"
    if w.ndim != 1 or (_base._knows_k() and w.shape != (k,)):
      raise ValueError(
        f"nlnl: `class_weight` must have shape {expected}, one weight per class, got {w.shape}."
      )
  if key is None:
    raise ValueError("nlnl: needs a PRNG `key=` (e.g. jax.random.fold_in(rng, step)).")
  s = _base._stats(z, labels)
  shift = jax.random.randint(key, labels.shape + (num_negatives,), 1, k, dtype=labels.dtype)
  neg = (labels[..., None] + shift) % k  # [..., n]
  classes = jnp.arange(k, dtype=labels.dtype).reshape((1,) * neg.ndim + (k,))
  mask = neg[..., None] == classes  # [..., n, K]
  zm = jnp.where(mask, -jnp.inf, s.z[..., None, :])
  mm = jax.lax.stop_gradient(jnp.max(zm, axis=-1, keepdims=True))
  log_rest = mm[..., 0] + jnp.log(jnp.sum(jnp.exp(zm - mm), axis=-1))  # logsumexp without ybar
  log_1mp = log_rest - s.lse[..., None]  # log(1 - p_ybar), [..., n]
  if min_prob is not None:
    log_1mp = jnp.maximum(log_1mp, math.log(min_prob))
  loss = -(jnp.sum if reduce_negatives == "sum" else jnp.mean)(log_1mp, axis=-1)
  if class_weight is not None:
    loss = loss * jnp.take(jnp.asarray(class_weight, loss.dtype), jnp.clip(labels, 0, k - 1))
  valid = (labels >= 0) & (labels < k)
  return _base._masked(jnp.where(valid, loss, jnp.nan), where)


def nlnl_class_weight(labels, num_classes: int) -> np.ndarray:
  """NLNL's class weights as the official code computes them: max_c n_c / n_k for each class k.

  n_k: how many of `labels` (the noisy training labels) are k. The official `NLNL(train_loader, ...)`
  reads them from `train_loader.dataset.targets`; pass the result as `nlnl(..., class_weight=w)`.
  A class without examples gets inf (as the official code).

  Args:
    labels: integer class ids, any shape (the noisy training labels).
    num_classes: K.

  Returns:
    float32 [K] weights, 1 for the largest class.

  Example:
    >>> from aplx import losses
    >>> print(losses.nlnl_class_weight([0, 0, 0, 1, 2, 2], 3))
    [1.  3.  1.5]
  """
  counts = np.bincount(np.asarray(labels).reshape(-1), minlength=int(num_classes)).astype(np.float64)
  with np.errstate(divide="ignore"):
    return (counts.max() / counts).astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# DMI (Xu et al., NeurIPS 2019): one value per batch
# ----------------------------------------------------------------------------------------------------


@_base._annotate("batch", batch_level=True)
def dmi(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  axis: int | tuple[int, ...] | None = -1,
  where: jax.typing.ArrayLike | None = None,
  *,
  eps: float = 1e-3,
) -> jax.Array:
  """Determinant-based mutual information loss, L_DMI = -log(|det(Y^T P)| + eps), over the whole batch.

  Y [N, K] is the one-hot labels and P [N, K] the softmax of the N examples of the batch (every
  position of `labels`, or those `where` keeps), so Y^T P is N times the empirical joint distribution
  of (label, prediction). The official code (`DMILoss`) adds eps = 1e-3 inside the log.

  A batch-level loss: the value depends on the whole batch, not on each example. To fit the
  per-example API it is returned broadcast to `labels.shape`, so `loss_fn(logits, labels).mean()` (what
  a train step does) is L_DMI and its gradient is L_DMI's; with `where`, the excluded entries give 0
  and `loss.sum() / where.sum()` is L_DMI of the kept examples. `info('dmi').batch_level` is True;
  `vmap` over examples, `normalize(dmi)` and pairs (`get('nce+dmi')`) are not meaningful and the
  latter two raise. Under `jit` with a batch sharded over devices, the determinant is of the global
  batch's matrix (XLA gathers it), as one device would compute it.

  Training: DMI fine-tunes a model pre-trained with cross entropy (Xu et al. train with CE first, then
  continue with DMI at a small learning rate). From a random initialisation P is close to uniform,
  Y^T P nearly singular and the gradient tiny: start from a CE checkpoint. The determinant is
  computed in float32 (float64 for float64 logits), as the official code does. |det| reaches the
  product of the per-class counts for a confident, correct model, which overflows float32 (3e38) for
  large K: e.g. K = 100 with 3 examples of every class (3^100 = 5e47). Xu et al. use it for small K
  (CIFAR-10, Clothing1M's 14 classes).

  Args:
    logits: [..., K] float scores (the class axis / axes given by `axis`).
    labels: [...] integer class ids (soft labels: TypeError). An out-of-range label that `where` keeps
      makes the whole batch's value NaN.
    axis: the class axis of `logits`, a tuple of axes, or None.
    where: optional bool mask [...]; excluded entries are left out of Y^T P, get 0 and exactly 0
      gradient.
    eps: > 0, added to |det| inside the log (official: 1e-3); bounds the loss by -log(eps).

  Returns:
    [...] L_DMI of the batch, broadcast (0 where `where` is False).

  Example:
    >>> import jax.numpy as jnp
    >>> from aplx import losses
    >>> jnp.set_printoptions(precision=4)
    >>> logits = jnp.array([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    >>> print(losses.dmi(logits, jnp.array([0, 1, 0])))
    [-0.3181 -0.3181 -0.3181]

  Reference: Xu et al., 'L_DMI: A Novel Information-theoretic Loss Function for Training Deep Nets
  Robust to Label Noise', NeurIPS 2019, Eq. (4); official code of Ma et al. 2020 `DMILoss`.
  """
  z, labels, k, where = _base._validate("dmi", logits, labels, axis=axis, where=where)
  _base._check_range("dmi", "eps", eps, lo=0.0, lo_open=True, fix="It is the 1e-3 inside -log(|det| + eps).")
  p = jax.nn.softmax(z, axis=-1).reshape(-1, k)
  y = labels.reshape(-1)
  classes = jnp.arange(k, dtype=y.dtype)
  y_onehot = (y[:, None] == classes[None, :]).astype(p.dtype)
  valid = (y >= 0) & (y < k)
  if where is not None:
    keep = where.reshape(-1)
    y_onehot = y_onehot * keep[:, None].astype(p.dtype)
    valid = valid | ~keep
  det = jnp.linalg.det(y_onehot.T @ p)
  value = jnp.where(jnp.all(valid), -jnp.log(jnp.abs(det) + eps), jnp.nan)
  return _base._masked(jnp.broadcast_to(value, labels.shape), where)
