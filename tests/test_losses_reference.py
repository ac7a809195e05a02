"""aplx.losses against float64 NumPy references written from the papers' formulas.

The references below use only the definitions (softmax, one-hot q, the sums as printed in the papers)
and never call aplx. Values are compared directly; gradients against float64 central finite
differences of the same references. K in {2, 10, 100}, logits at three scales, jit and no jit.
"""

import functools
import math

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

import aplx.losses as L

# ----------------------------------------------------------------------------------------------------
# float64 references (z: [N, K] float64, y: [N] int) -> [N]
# ----------------------------------------------------------------------------------------------------


def _parts(z, y):
  z = np.asarray(z, np.float64)
  m = z.max(-1, keepdims=True)
  lse = m[:, 0] + np.log(np.exp(z - m).sum(-1))
  logp = z - lse[:, None]  # = log softmax, exactly (no log of an underflowed p)
  p = np.exp(logp)
  q = np.eye(z.shape[-1])[y]
  return logp, p, q


def r_ce(z, y):
  logp, _, q = _parts(z, y)
  return -(q * logp).sum(-1)


def r_fl(z, y, gamma, frozen=None):
  logp, p, q = _parts(z, y)
  fp = p if frozen is None else _parts(frozen, y)[1]  # frozen: factor from fixed logits
  return -(q * (1 - fp) ** gamma * logp).sum(-1)


def r_mae(z, y):
  _, p, q = _parts(z, y)
  return np.abs(p - q).sum(-1)


def r_rce(z, y, A, min_prob=None):
  _, p, q = _parts(z, y)
  if min_prob is not None:
    p = np.clip(p, min_prob, 1.0)
  logq = np.where(q == 1, 0.0, A)
  return -(p * logq).sum(-1)


def r_gce(z, y, qq, min_prob=None):
  _, p, q = _parts(z, y)
  if min_prob is not None:
    p = np.clip(p, min_prob, 1.0)
  return (q * (1 - p**qq) / qq).sum(-1)


def r_norm(ref):
  """Eq. (1): L(f(x), y) / sum_j L(f(x), j)."""

  def f(z, y):
    k = z.shape[-1]
    den = sum(ref(z, np.full_like(y, j)) for j in range(k))
    return ref(z, y) / den

  return f


def r_nce_closed(z, y):
  """Eq. (2) second line: log base prod_k p_k of p_y."""
  logp, _, q = _parts(z, y)
  return (q * logp).sum(-1) / logp.sum(-1)


def r_ngce_closed(z, y, qq, min_prob=None):
  _, p, q = _parts(z, y)
  if min_prob is not None:
    p = np.clip(p, min_prob, 1.0)
  return (1 - (q * p).sum(-1) ** qq) / (z.shape[-1] - (p**qq).sum(-1))


def r_nfl_authors(z, y, gamma, frozen):
  """Official NFL: every (1 - p)^gamma factor from fixed logits `frozen`; log p live everywhere."""
  num = r_fl(z, y, gamma, frozen=frozen)
  k = z.shape[-1]
  den = sum(r_fl(z, np.full_like(y, j), gamma, frozen=frozen) for j in range(k))
  return num / den


def r_nfl_frozen_den(z, y, gamma, frozen):
  """Numerator factor and the whole denominator from fixed logits `frozen` (no gradient there)."""
  num = r_fl(z, y, gamma, frozen=frozen)
  k = z.shape[-1]
  den = sum(r_fl(frozen, np.full_like(y, j), gamma) for j in range(k))
  return num / den


def r_nnce(z, y, mp):
  logp, _, q = _parts(z, y)
  a = -np.log(mp)
  t = a + np.maximum(logp, np.log(mp))
  return 1 - (q * t).sum(-1) / t.sum(-1)


def r_nnfl(z, y, gamma, mp):
  logp, _, q = _parts(z, y)
  lc = np.maximum(logp, np.log(mp))
  fl = -((1 - np.exp(lc)) ** gamma) * lc
  a = -((1 - mp) ** gamma) * np.log(mp)
  return 1 - (q * (a - fl)).sum(-1) / (a - fl).sum(-1)


def r_nnfl_authors(z, y, gamma, mp, frozen):
  """Official ANL `NormalizedNegativeFocalLoss`: log p clamped at log(mp); every focal factor
  (1 - p)^gamma from `.data` (here: fixed logits `frozen`), in the numerator and the normalizer."""
  logp, _, q = _parts(z, y)
  lc = np.maximum(logp, np.log(mp))
  lc0 = np.maximum(_parts(frozen, y)[0], np.log(mp))
  fl = -((1 - np.exp(lc0)) ** gamma) * lc
  a = -((1 - mp) ** gamma) * np.log(mp)
  return 1 - (q * (a - fl)).sum(-1) / (a - fl).sum(-1)


def _py(z, y):
  _, p, q = _parts(z, y)
  return (p * q).sum(-1)


def r_agce(z, y, a, qq):
  return ((a + 1) ** qq - (a + _py(z, y)) ** qq) / qq


def r_aul(z, y, a, qq):
  return ((a - _py(z, y)) ** qq - (a - 1) ** qq) / qq


def r_ael(z, y, a):
  return np.exp(-_py(z, y) / a)


def r_poly1(z, y, eps):
  return r_ce(z, y) + eps * (1 - _py(z, y))


def r_taylor(z, y, t):
  u = 1 - _py(z, y)
  return sum(u**j / j for j in range(1, t + 1))


def r_ce_eps(z, y, m):
  logp, p, q = _parts(z, y)
  pe = p.copy()
  pe[np.arange(len(y)), p.argmax(-1)] += m
  pe /= 1 + m
  # log p'_y, written so that an underflowed p_y (large logits) stays exact: p_y = exp(logp_y).
  is_max = p.argmax(-1) == y
  logp_y = (q * logp).sum(-1)
  with np.errstate(divide="ignore"):
    direct = np.log((q * pe).sum(-1))
  return -np.where(is_max, direct, logp_y - np.log1p(m))


def r_nlnl(z, y, neg):
  _, p, _ = _parts(z, y)
  p_neg = p[np.arange(len(y)), neg]
  # 1 - p_neg as the sum of the other probabilities (exact when p_neg rounds to 1)
  rest = p.sum(-1) - p_neg
  logp, _, _ = _parts(z, y)
  zz = np.asarray(z, np.float64).copy()
  zz[np.arange(len(y)), neg] = -np.inf
  m = zz.max(-1)
  lse_rest = m + np.log(np.exp(zz - m[:, None]).sum(-1))
  lse = np.asarray(z, np.float64).max(-1) + np.log(
    np.exp(z - np.asarray(z, np.float64).max(-1, keepdims=True)).sum(-1)
  )
  del rest, logp
  return -(lse_rest - lse)


A_AUTH = math.log(1e-4)

# name -> (aplx fn(logits, labels), reference(z, y, z0) ; z0 = unperturbed logits for detached refs)
CASES = {
  "ce": (L.cross_entropy, lambda z, y, z0: r_ce(z, y)),
  "fl_g0.5": (functools.partial(L.focal_loss, gamma=0.5), lambda z, y, z0: r_fl(z, y, 0.5)),
  "fl_detached": (
    functools.partial(L.focal_loss, gamma=0.5, detach_focal_factor=True),
    lambda z, y, z0: r_fl(z, y, 0.5, frozen=z0),
  ),
  "mae": (L.mae, lambda z, y, z0: r_mae(z, y)),
  "mae_halved": (functools.partial(L.mae, halved=True), lambda z, y, z0: r_mae(z, y) / 2),
  "rce": (L.rce, lambda z, y, z0: r_rce(z, y, -4.0)),
  "rce_authors": (
    functools.partial(L.rce, log_zero=L.AUTHORS_LOG_ZERO, min_prob=1e-7),
    lambda z, y, z0: r_rce(z, y, A_AUTH, 1e-7),
  ),
  "gce_q0.7": (functools.partial(L.gce, q=0.7), lambda z, y, z0: r_gce(z, y, 0.7)),
  "gce_authors": (functools.partial(L.gce, q=0.7, min_prob=1e-7), lambda z, y, z0: r_gce(z, y, 0.7, 1e-7)),
  "sce": (
    functools.partial(L.sce, alpha=0.1, beta=1.0),
    lambda z, y, z0: 0.1 * r_ce(z, y) + r_rce(z, y, -4.0),
  ),
  "nce": (L.nce, lambda z, y, z0: r_norm(r_ce)(z, y)),
  "nce_closed": (L.nce, lambda z, y, z0: r_nce_closed(z, y)),
  "nfl": (functools.partial(L.nfl, gamma=0.5), lambda z, y, z0: r_norm(lambda a, b: r_fl(a, b, 0.5))(z, y)),
  "nfl_authors": (
    functools.partial(L.nfl, gamma=0.5, detach_focal_factor=True),
    lambda z, y, z0: r_nfl_authors(z, y, 0.5, z0),
  ),
  "nfl_frozen_den": (
    functools.partial(L.nfl, gamma=0.5, detach_focal_factor=True, stop_gradient_normalizer=True),
    lambda z, y, z0: r_nfl_frozen_den(z, y, 0.5, z0),
  ),
  "nmae": (L.nmae, lambda z, y, z0: r_norm(r_mae)(z, y)),
  "nmae_halved": (
    functools.partial(L.nmae, halved=True),
    lambda z, y, z0: (1 - _py(z, y)) / (2 * (z.shape[-1] - 1)),
  ),
  "nrce": (L.nrce, lambda z, y, z0: r_norm(lambda a, b: r_rce(a, b, -4.0))(z, y)),
  "nrce_authors": (
    functools.partial(L.nrce, log_zero=A_AUTH, min_prob=1e-7, authors_normalizer=True),
    lambda z, y, z0: r_rce(z, y, A_AUTH, 1e-7) * (1 / 4 * (z.shape[-1] - 1)),
  ),
  "ngce": (functools.partial(L.ngce, q=0.7), lambda z, y, z0: r_norm(lambda a, b: r_gce(a, b, 0.7))(z, y)),
  "ngce_q0.1_closed": (functools.partial(L.ngce, q=0.1), lambda z, y, z0: r_ngce_closed(z, y, 0.1)),
  "ngce_authors": (
    functools.partial(L.ngce, q=0.7, min_prob=1e-7),
    lambda z, y, z0: r_ngce_closed(z, y, 0.7, 1e-7),
  ),
  "nnce": (L.nnce, lambda z, y, z0: r_nnce(z, y, 1e-7)),
  "nnfl": (functools.partial(L.nnfl, gamma=0.5), lambda z, y, z0: r_nnfl(z, y, 0.5, 1e-7)),
  "nnfl_authors": (
    functools.partial(L.nnfl, gamma=0.5, detach_focal_factor=True),
    lambda z, y, z0: r_nnfl_authors(z, y, 0.5, 1e-7, z0),
  ),
  "anl_fl_authors": (
    functools.partial(L.anl_fl, alpha=2.0, beta=3.0, gamma=0.5, detach_focal_factor=True),
    lambda z, y, z0: 2 * r_nfl_authors(z, y, 0.5, z0) + 3 * r_nnfl_authors(z, y, 0.5, 1e-7, z0),
  ),
  "anl_ce": (
    functools.partial(L.anl_ce, alpha=5.0, beta=5.0),
    lambda z, y, z0: 5 * r_nce_closed(z, y) + 5 * r_nnce(z, y, 1e-7),
  ),
  "anl_fl": (
    functools.partial(L.anl_fl, alpha=2.0, beta=3.0, gamma=0.5),
    lambda z, y, z0: 2 * r_norm(lambda a, b: r_fl(a, b, 0.5))(z, y) + 3 * r_nnfl(z, y, 0.5, 1e-7),
  ),
  "agce": (functools.partial(L.agce, a=0.6, q=0.6), lambda z, y, z0: r_agce(z, y, 0.6, 0.6)),
  "aul": (functools.partial(L.aul, a=5.5, q=3.0), lambda z, y, z0: r_aul(z, y, 5.5, 3.0)),
  "ael": (functools.partial(L.ael, a=2.5), lambda z, y, z0: r_ael(z, y, 2.5)),
  "poly1": (functools.partial(L.poly1, epsilon=1.0), lambda z, y, z0: r_poly1(z, y, 1.0)),
  "taylor6": (functools.partial(L.taylor_ce, order=6), lambda z, y, z0: r_taylor(z, y, 6)),
  "ce_eps_m10": (functools.partial(L.ce_eps, m=10.0), lambda z, y, z0: r_ce_eps(z, y, 10.0)),
}

_PAIR_REFS = {
  "nce": lambda z, y: r_nce_closed(z, y),
  "nfl": lambda z, y: r_norm(lambda a, b: r_fl(a, b, 0.5))(z, y),
  "ngce": lambda z, y: r_ngce_closed(z, y, 0.7),
  "mae": r_mae,
  "rce": lambda z, y: r_rce(z, y, -4.0),
  "agce": lambda z, y: r_agce(z, y, 0.6, 0.6),
  "aul": lambda z, y: r_aul(z, y, 5.5, 3.0),
  "ael": lambda z, y: r_ael(z, y, 2.5),
  "ce-eps": lambda z, y: r_ce_eps(z, y, 1e5),
}

# A few registry pairs end to end (linearity of every pair in alpha, beta is in the properties test).
for _pair in ["nce+rce", "nfl+mae", "ngce+rce", "nce+agce", "ce-eps+mae"]:
  _a, _b = _pair.split("+")
  CASES["get:" + _pair] = (
    L.get(_pair, alpha=0.7, beta=1.3),
    (lambda ra, rb: lambda z, y, z0: 0.7 * ra(z, y) + 1.3 * rb(z, y))(_PAIR_REFS[_a], _PAIR_REFS[_b]),
  )

SCALES = {"small": 0.1, "medium": 3.0, "large": 30.0}
KS = (2, 10, 100)
BATCH = 5


def _inputs(k, scale, seed=0):
  rng = np.random.default_rng(seed + k)
  z = (rng.standard_normal((BATCH, k)) * scale).astype(np.float32)
  y = rng.integers(0, k, size=BATCH).astype(np.int32)
  y[0] = int(np.argmax(z[0]))  # always one confidently-correct and one wrong example
  y[1] = int(np.argmin(z[1]))
  return z, y


def _fd_grad(ref, z, y, h):
  """Central differences of sum_n ref(z)_n in float64."""
  z = z.astype(np.float64)
  n, k = z.shape
  eye = np.eye(k) * h
  zp = (z[:, None, :] + eye[None]).reshape(n * k, k)
  zm = (z[:, None, :] - eye[None]).reshape(n * k, k)
  yy = np.repeat(y, k)
  z0 = np.repeat(z, k, axis=0)
  return ((ref(zp, yy, z0) - ref(zm, yy, z0)) / (2 * h)).reshape(n, k)


# Tolerances sized to float32 (worst case over all CASES, measured: value 1.9e-6 (aul) and gradient
# 5.2e-7 (nrce_authors) relative to max(1, |reference|) per unit of logit scale; 2.5-4x headroom).
VALUE_TOL = 5e-6
GRAD_TOL = 2e-6


def _compare(value, grad, ref, k, scale):
  """float32 value and gradient vs. the float64 reference: (value, want, grad, want_grad, value tol,
  grad atol)."""
  z, y = _inputs(k, scale)
  want = ref(z.astype(np.float64), y, z.astype(np.float64))
  want_g = _fd_grad(ref, z, y, h=1e-6 * max(1.0, scale))
  gscale = max(1.0, float(np.abs(want_g).max()))
  return (
    np.asarray(value(z, y)),
    want,
    np.asarray(grad(z, y)),
    want_g,
    VALUE_TOL * max(1.0, scale),
    GRAD_TOL * gscale * max(1.0, scale),
  )


class ReferenceTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*[(n, n) for n in CASES])
  def test_value_and_grad(self, case):
    fn, ref = CASES[case]
    value = self.variant(lambda z, y: fn(z, y))
    grad = self.variant(jax.grad(lambda z, y: jnp.sum(fn(z, y))))
    for k in KS:
      for sname, scale in SCALES.items():
        got, want, got_g, want_g, tol, gtol = _compare(value, grad, ref, k, scale)
        self.assertEqual(got.dtype, np.float32)
        np.testing.assert_allclose(
          got, want, rtol=tol, atol=tol, err_msg=f"{case} value, K={k}, scale={sname}"
        )
        self.assertTrue(np.all(np.isfinite(got_g)), f"{case} grad not finite, K={k}, {sname}")
        np.testing.assert_allclose(
          got_g, want_g, rtol=1e-5, atol=gtol, err_msg=f"{case} grad, K={k}, scale={sname}"
        )


# Fidelity option -> the case it must differ from. At scale "large" (logits ~30) the probabilities
# saturate and focal factors have no gradient, so detach options coincide there; everywhere else the
# default must fail the option's reference (value or gradient) at the tolerances above.
OPTION_VS_DEFAULT = {
  "fl_detached": "fl_g0.5",
  "nfl_authors": "nfl",
  "nfl_frozen_den": "nfl_authors",
  "nnfl_authors": "nnfl",
  "anl_fl_authors": "anl_fl",
  "mae_halved": "mae",
  "rce_authors": "rce",
  "nrce_authors": "nrce",
  "nmae_halved": "nmae",
}


class FidelityOptionsAreDistinguishedTest(chex.TestCase):
  @parameterized.named_parameters(*[(n, n) for n in OPTION_VS_DEFAULT])
  def test_default_fails_the_options_reference(self, option):
    _, ref = CASES[option]
    fn = CASES[OPTION_VS_DEFAULT[option]][0]
    value = jax.jit(lambda z, y: fn(z, y))
    grad = jax.jit(jax.grad(lambda z, y: jnp.sum(fn(z, y))))
    for k in KS:
      for sname in ("small", "medium"):
        got, want, got_g, want_g, tol, gtol = _compare(value, grad, ref, k, SCALES[sname])
        value_off = np.any(np.abs(got - want) > tol + tol * np.abs(want))
        grad_off = np.any(np.abs(got_g - want_g) > gtol + 1e-5 * np.abs(want_g))
        self.assertTrue(
          value_off or grad_off,
          f"{option} indistinguishable from {OPTION_VS_DEFAULT[option]} at K={k}, scale={sname}",
        )


class NLNLReferenceTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  def test_value_and_grad_given_the_drawn_negative(self):
    key = jax.random.key(3)
    fn = self.variant(lambda z, y: L.nlnl(z, y, key=key))
    gfn = self.variant(jax.grad(lambda z, y: jnp.sum(L.nlnl(z, y, key=key))))
    for k in KS:
      for scale in SCALES.values():
        z, y = _inputs(k, scale)
        # the same draw as the documented rule: ybar = (y + U{1..K-1}) mod K
        shift = np.asarray(jax.random.randint(key, (BATCH, 1), 1, k, dtype=jnp.int32))[:, 0]
        neg = (y + shift) % k
        self.assertTrue(np.all(neg != y))
        ref = lambda zz, yy, z0, neg=neg: r_nlnl(zz, np.asarray(yy), np.repeat(neg, len(yy) // len(neg)))
        np.testing.assert_allclose(
          np.asarray(fn(z, y)),
          ref(z, y, None),
          rtol=VALUE_TOL * max(1, scale),
          atol=VALUE_TOL * max(1, scale),
        )
        want_g = _fd_grad(ref, z, y, h=1e-6 * max(1.0, scale))
        gtol = GRAD_TOL * max(1.0, float(np.abs(want_g).max())) * max(1, scale)
        np.testing.assert_allclose(np.asarray(gfn(z, y)), want_g, rtol=1e-5, atol=gtol)

  @chex.variants(with_jit=True, without_jit=True)
  def test_several_negatives_are_summed_as_the_official_code(self):
    """Kim et al.'s code: loss_neg * (B * ln_neg) / B, i.e. per example the sum over its negatives,
    each -w[y] log(clamp(1 - p_neg, 1e-5, 1))."""
    key, n, k = jax.random.key(7), 4, 10
    z, y = _inputs(k, 3.0)
    w = np.linspace(0.5, 2.0, k).astype(np.float32)
    shift = np.asarray(jax.random.randint(key, (BATCH, n), 1, k, dtype=jnp.int32))
    neg = (y[:, None] + shift) % k
    _, p, _ = _parts(z, y)
    terms = -np.log(np.clip(1 - p[np.arange(BATCH)[:, None], neg], 1e-5, 1.0))  # [B, n]
    want = w[y] * terms.sum(-1)
    for reduce, expect in (("sum", want), ("mean", want / n)):
      fn = self.variant(
        lambda z, y, reduce=reduce: L.nlnl(
          z, y, key=key, num_negatives=n, reduce_negatives=reduce, class_weight=w, min_prob=1e-5
        )
      )
      np.testing.assert_allclose(np.asarray(fn(z, y)), expect, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# The authors' clamps (fidelity=authors), on inputs where they act
# ----------------------------------------------------------------------------------------------------


def _clamp_inputs(k):
  """Rows where probabilities fall far below 1e-7: confidently right (p_y -> 1, others ~e^-30), and
  confidently wrong (p_y ~e^-30), plus one mild row."""
  z = np.zeros((3, k), np.float32)
  y = np.array([0, 1, 2], np.int32)
  z[0, 0] = 30.0
  z[1, 1] = -30.0
  z[2] = np.linspace(-1.0, 1.0, k)
  return z, y


MP = 1e-7
# name -> (aplx fn, reference with the clamp as the official code writes it, the same without it)
CLAMP_CASES = {
  "rce": (
    functools.partial(L.rce, log_zero=A_AUTH, min_prob=MP),
    lambda z, y: r_rce(z, y, A_AUTH, MP),
    lambda z, y: r_rce(z, y, A_AUTH),
  ),
  "gce": (
    functools.partial(L.gce, q=0.1, min_prob=MP),
    lambda z, y: r_gce(z, y, 0.1, MP),
    lambda z, y: r_gce(z, y, 0.1),
  ),
  "ngce": (
    functools.partial(L.ngce, q=0.1, min_prob=MP),
    lambda z, y: r_ngce_closed(z, y, 0.1, MP),
    lambda z, y: r_ngce_closed(z, y, 0.1),
  ),
  "nrce": (
    functools.partial(L.nrce, log_zero=A_AUTH, min_prob=MP, authors_normalizer=True),
    lambda z, y: r_rce(z, y, A_AUTH, MP) * (z.shape[-1] - 1) / 4,
    lambda z, y: r_rce(z, y, A_AUTH) * (z.shape[-1] - 1) / 4,
  ),
  "sce": (
    functools.partial(L.sce, alpha=0.1, beta=1.0, log_zero=A_AUTH, min_prob=MP),
    lambda z, y: 0.1 * r_ce(z, y) + r_rce(z, y, A_AUTH, MP),
    lambda z, y: 0.1 * r_ce(z, y) + r_rce(z, y, A_AUTH),
  ),
}


class AuthorsClampTest(chex.TestCase):
  """Each clamp changes the result here by far more than the tolerance, so removing it fails."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*[(n, n) for n in CLAMP_CASES])
  def test_clamp_acts_and_matches_the_official_formula(self, case):
    fn, clamped, unclamped = CLAMP_CASES[case]
    value = self.variant(lambda z, y: fn(z, y))
    grad = self.variant(jax.grad(lambda z, y: jnp.sum(fn(z, y))))
    for k in (10, 100):
      z, y = _clamp_inputs(k)
      want, other = clamped(z.astype(np.float64), y), unclamped(z.astype(np.float64), y)
      got = np.asarray(value(z, y))
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7, err_msg=f"{case}, K={k}")
      # The clamp moves a confident row's value by >> rtol: a clamp-less loss would fail above.
      self.assertGreater(np.max(np.abs(want - other) / np.abs(want)), 1e-2, f"{case}, K={k}")
      # Gradient: finite differences of the clamped reference (no entry sits at the clamp's kink).
      want_g = _fd_grad(lambda zz, yy, z0: clamped(zz, yy), z, y, h=1e-5)
      np.testing.assert_allclose(
        np.asarray(grad(z, y)), want_g, rtol=1e-4, atol=2e-6, err_msg=f"{case} grad, K={k}"
      )
