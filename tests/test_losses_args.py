"""aplx.losses' optax-style arguments: soft labels, `axis`, `where`, and what `get` returns.

Soft-label values and gradients are checked against float64 NumPy references written from each
loss's soft-label definition (docs/losses.md, "Soft labels"), never calling aplx; gradients against
float64 central differences of the same references.
"""

import functools
import inspect
import math
import pydoc

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

import aplx.losses as L

# ----------------------------------------------------------------------------------------------------
# float64 references for soft labels (z: [N, K], w: [N, K] probabilities) -> [N]
# ----------------------------------------------------------------------------------------------------


def _logp(z):
  z = np.asarray(z, np.float64)
  m = z.max(-1, keepdims=True)
  return z - (m + np.log(np.exp(z - m).sum(-1, keepdims=True)))


def _onehot(k, j, n):
  return np.broadcast_to(np.eye(k)[j], (n, k))


def r_ce(z, w):
  return -(w * _logp(z)).sum(-1)


def r_fl(z, w, g):
  lp = _logp(z)
  return -(w * (1 - np.exp(lp)) ** g * lp).sum(-1)


def r_mae(z, w):
  return np.abs(np.exp(_logp(z)) - w).sum(-1)


def r_rce(z, w, a, mp=None):
  p = np.exp(_logp(z))
  if mp is not None:
    p = np.clip(p, mp, 1.0)
  with np.errstate(divide="ignore"):
    return -(p * np.maximum(np.log(w), a)).sum(-1)


def r_gce(z, w, qq, mp=None):
  p = np.exp(_logp(z))
  if mp is not None:
    p = np.clip(p, mp, 1.0)
  return (w * (1 - p**qq) / qq).sum(-1)


def r_poly1(z, w, eps):
  return r_ce(z, w) + eps * (1 - (w * np.exp(_logp(z))).sum(-1))


def r_agce(z, w, a, qq):  # integer-label AGCE, label-weighted (only through normalize)
  p = np.exp(_logp(z))
  return (w * ((a + 1) ** qq - (a + p) ** qq) / qq).sum(-1)


def r_expected_norm(ref, den=None):
  """sum_k w_k L(z, k) / sum_j L(z, j), L(z, j) = ref(z, one-hot(j)) (or / den(z) if given)."""

  def f(z, w):
    n, k = z.shape
    per = np.stack([ref(z, _onehot(k, j, n)) for j in range(k)], -1)
    return (w * per).sum(-1) / (per.sum(-1) if den is None else den(z))

  return f


A = -4.0
MP = 1e-7

# name -> (aplx fn(logits, labels), float64 reference(z, w))
SOFT_CASES = {
  "ce": (L.cross_entropy, r_ce),
  "fl": (functools.partial(L.focal_loss, gamma=0.5), lambda z, w: r_fl(z, w, 0.5)),
  "mae": (L.mae, r_mae),
  "mae_halved": (functools.partial(L.mae, halved=True), lambda z, w: r_mae(z, w) / 2),
  "rce": (L.rce, lambda z, w: r_rce(z, w, A)),
  "rce_authors": (
    functools.partial(L.rce, log_zero=L.AUTHORS_LOG_ZERO, min_prob=MP),
    lambda z, w: r_rce(z, w, L.AUTHORS_LOG_ZERO, MP),
  ),
  "gce": (functools.partial(L.gce, q=0.7), lambda z, w: r_gce(z, w, 0.7)),
  "gce_authors": (functools.partial(L.gce, q=0.7, min_prob=MP), lambda z, w: r_gce(z, w, 0.7, MP)),
  "sce": (functools.partial(L.sce, alpha=0.1, beta=1.0), lambda z, w: 0.1 * r_ce(z, w) + r_rce(z, w, A)),
  "nce": (L.nce, r_expected_norm(r_ce)),
  "nfl": (functools.partial(L.nfl, gamma=0.5), r_expected_norm(lambda z, w: r_fl(z, w, 0.5))),
  "nmae": (L.nmae, r_expected_norm(r_mae)),
  "nmae_halved": (functools.partial(L.nmae, halved=True), lambda z, w: r_expected_norm(r_mae)(z, w) / 2),
  "nrce": (L.nrce, r_expected_norm(lambda z, w: r_rce(z, w, A))),
  "nrce_authors": (
    functools.partial(L.nrce, log_zero=L.AUTHORS_LOG_ZERO, min_prob=MP, authors_normalizer=True),
    lambda z, w: r_expected_norm(
      lambda z, w: r_rce(z, w, L.AUTHORS_LOG_ZERO, MP), den=lambda z: 4.0 / (z.shape[-1] - 1)
    )(z, w),
  ),
  "ngce": (functools.partial(L.ngce, q=0.7), r_expected_norm(lambda z, w: r_gce(z, w, 0.7))),
  "ngce_authors": (
    functools.partial(L.ngce, q=0.1, min_prob=MP),
    lambda z, w: (
      r_gce(z, w, 0.1, MP) * 0.1 / (z.shape[-1] - (np.clip(np.exp(_logp(z)), MP, 1.0) ** 0.1).sum(-1))
    ),
  ),
  "poly1": (functools.partial(L.poly1, epsilon=2.0), lambda z, w: r_poly1(z, w, 2.0)),
  "normalize(agce)": (
    jax.jit(functools.partial(L.normalize(L.agce), a=0.6, q=0.6)),  # jit: eager vmap is slow
    r_expected_norm(lambda z, w: r_agce(z, w, 0.6, 0.6)),
  ),
  "get:nce+rce": (
    L.get("nce+rce", alpha=0.7, beta=1.3),
    lambda z, w: 0.7 * SOFT_CASES["nce"][1](z, w) + 1.3 * r_rce(z, w, A),
  ),
  "get:ngce+mae": (
    L.get("ngce+mae", alpha=2.0, beta=0.5, q=0.7, halved=True),
    lambda z, w: 2.0 * SOFT_CASES["ngce"][1](z, w) + 0.25 * r_mae(z, w),
  ),
}


def _soft_inputs(k, scale, seed=0):
  """Logits and probability labels: Dirichlet rows (some entries below e^A and exact zeros, where
  RCE's clamp of log q acts), a label-smoothed row and a one-hot row."""
  rng = np.random.default_rng(seed + 17 * k)
  n = 6
  z = (rng.standard_normal((n, k)) * scale).astype(np.float32)
  w = rng.dirichlet(np.full(k, 0.3), size=n)
  w[1] = 0.9 * np.eye(k)[1 % k] + 0.1 / k  # label smoothing
  w[2] = np.eye(k)[0]  # one-hot
  w[3, 0] = 0.0
  w[3] /= w[3].sum()
  return z, w.astype(np.float32)


def _fd_grad(ref, z, w, h):
  """Central differences of sum_n ref(z, w)_n with respect to z, in float64."""
  z = z.astype(np.float64)
  w = w.astype(np.float64)
  n, k = z.shape
  eye = np.eye(k) * h
  zp = (z[:, None, :] + eye[None]).reshape(n * k, k)
  zm = (z[:, None, :] - eye[None]).reshape(n * k, k)
  ww = np.repeat(w, k, axis=0)
  return ((ref(zp, ww) - ref(zm, ww)) / (2 * h)).reshape(n, k)


def _value_and_grad(fn):
  """Eager on purpose: with the same few shapes in every test, JAX's per-op cache makes eager calls
  ~10x cheaper than one jit compile per loss (the jitted paths are covered where tracing matters)."""
  return lambda z, w: (fn(z, w), jax.grad(lambda z: fn(z, w).sum())(z))


class SoftLabelReferenceTest(chex.TestCase):
  @parameterized.named_parameters(*[(n, n) for n in SOFT_CASES])
  def test_value_and_grad(self, case):
    fn, ref = SOFT_CASES[case]
    run = _value_and_grad(fn)
    for k in (2, 10):
      for scale in (0.1, 3.0, 30.0):
        z, w = _soft_inputs(k, scale)
        got, got_g = run(z, w)
        self.assertEqual(got.dtype, jnp.float32)
        want = ref(z.astype(np.float64), w.astype(np.float64))
        want_g = _fd_grad(ref, z, w, h=1e-6 * max(1.0, scale))
        tol = 5e-6 * max(1.0, scale)
        gtol = 2e-6 * max(1.0, float(np.abs(want_g).max())) * max(1.0, scale)
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=f"{case} K={k} scale={scale}")
        np.testing.assert_allclose(got_g, want_g, rtol=1e-5, atol=gtol, err_msg=f"{case} grad K={k} {scale}")

  def test_rce_clamp_of_log_q_acts(self):
    """Entries with q_k < e^A count as A (not log q_k): a reference without the clamp differs."""
    z, w = _soft_inputs(10, 3.0)
    self.assertTrue(np.any((w > 0) & (w < math.exp(A))))
    got = np.asarray(L.rce(z, w))
    with np.errstate(divide="ignore", invalid="ignore"):
      unclamped = -(np.exp(_logp(z)) * np.where(w > 0, np.log(np.maximum(w, 1e-300)), A)).sum(-1)
    self.assertGreater(np.max(np.abs(got - unclamped)), 1e-3)

  def test_gradient_with_respect_to_soft_labels_is_finite(self):
    z, w = _soft_inputs(10, 3.0)
    fns = {name: L.get(name) for name in ("mae", "rce", "nrce")}
    grads = {n: jax.grad(lambda w: f(z, w).sum())(jnp.asarray(w)) for n, f in fns.items()}
    for name, g in grads.items():
      self.assertTrue(bool(jnp.all(jnp.isfinite(g))), name)


SOFT_NAMES = [n for n in L.names() if L.info(n).soft_labels]


def _call(fn, z, y, **kw):
  if getattr(fn, "needs_key", False):
    kw["key"] = jax.random.key(3)
  return fn(z, y, **kw)


class SoftLabelSupportTest(chex.TestCase):
  def test_registry_flag_matches_what_each_loss_accepts(self):
    z, w = _soft_inputs(5, 1.0)
    for name in L.names():
      fn = L.get(name)
      if L.info(name).soft_labels:
        chex.assert_shape(_call(fn, z, w), (6,))
      else:
        with self.assertRaisesRegex(TypeError, r"soft \(probability\) labels are not supported", msg=name):
          _call(fn, z, w)
    singles = {n for n in SOFT_NAMES if "+" not in n}
    self.assertEqual(singles, set(L._base.SOFT_LABEL_LOSSES.split(", ")))  # the list in the error

  def test_unsupported_message_names_the_loss_and_the_fix(self):
    z, w = _soft_inputs(5, 1.0)
    with self.assertRaisesRegex(
      TypeError, r"^nlnl: soft \(probability\) labels are not supported.*labels.argmax\(-1\).*ce, fl, gce"
    ):
      L.nlnl(z, w, key=jax.random.key(0))
    with self.assertRaisesRegex(TypeError, r"^agce: soft"):
      L.get("nce+agce")(z, w)  # a pair names the component that refuses
    with self.assertRaisesRegex(TypeError, r"^nnce: soft"):
      L.nnce(z, w)
    with self.assertRaisesRegex(TypeError, r"^anl_ce: soft.*labels.argmax\(1\)"):
      L.anl_ce(np.moveaxis(z, 1, 0), np.moveaxis(w, 1, 0), axis=1)

  @parameterized.named_parameters(*[(n, n) for n in SOFT_NAMES if "+" not in n or n == "nce+rce"])
  def test_one_hot_soft_labels_reproduce_integer_labels(self, name):
    """Label-weighted losses (sum_k q_k L_k) add exact zeros, so their values are bitwise equal; MAE
    and RCE evaluate a different (equally accurate) float32 expression, equal to rounding at the
    logit scale: the integer form's log p_y = z_y - lse itself carries an error ~ 6e-8 |z|. So do NFL
    and NGCE, whose integer-label path computes the normalizer through `_lse_and_sum` (p = e / total,
    NFL's sum as lse sum f - sum f z)."""
    fn = L.get(name)
    vg = lambda z, y: (fn(z, y), jax.grad(lambda z: fn(z, y).sum())(z))
    run = lambda z, y: (vg(z, y), vg(z, jax.nn.one_hot(y, z.shape[-1])))
    exact = not {"mae", "rce", "sce", "nfl", "ngce"} & set(name.split("+"))
    for scale in (3.0, 30.0):
      k = 10
      z = np.asarray(jax.random.normal(jax.random.key(k), (6, k)) * scale)
      y = np.arange(6) % k
      y[0] = z[0].argmax()
      (v_int, g_int), (v_soft, g_soft) = run(z, y)
      msg = f"{name} K={k} scale={scale}"
      if exact:
        np.testing.assert_array_equal(v_soft, v_int, err_msg=msg)
      else:
        np.testing.assert_allclose(v_soft, v_int, rtol=2e-6, atol=1e-6 * max(1.0, scale), err_msg=msg)
      np.testing.assert_allclose(g_soft, g_int, rtol=1e-5, atol=1e-6, err_msg=msg)

  def test_normalize_of_soft_base_equals_closed_form(self):
    z, w = _soft_inputs(10, 3.0)
    pairs = [
      (L.cross_entropy, L.nce),
      (functools.partial(L.gce, q=0.7), functools.partial(L.ngce, q=0.7)),
      (L.mae, L.nmae),
      (L.rce, L.nrce),
    ]
    for base, closed in pairs:
      a, ga = _value_and_grad(L.normalize(base))(z, w)
      b, gb = _value_and_grad(closed)(z, w)
      np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
      np.testing.assert_allclose(ga, gb, rtol=5e-5, atol=5e-6)

  def test_soft_labels_sum_to_one_over_labels_for_normalized_losses(self):
    """Linear in q: the K one-hot values of a normalized loss sum to 1, so any q gives a convex
    combination; the uniform q gives exactly 1/K."""
    z, _ = _soft_inputs(10, 3.0)
    uniform = np.full_like(z, 0.1)
    for name in ("nce", "nfl", "ngce", "nmae", "nrce"):
      np.testing.assert_allclose(L.get(name)(z, uniform), 0.1, rtol=2e-5, err_msg=name)

  def test_soft_label_validation(self):
    z, w = _soft_inputs(5, 1.0)
    cases = [
      (
        w[:, :4],
        TypeError,
        r"cross_entropy: `labels` must be integer class ids of shape \(6,\).*or class probabilities",
      ),
      (
        w - 0.5,
        ValueError,
        r"cross_entropy: soft `labels` must be probabilities >= 0, got a minimum of -0.5",
      ),
      (w * 2, ValueError, r"each row of soft `labels` must sum to 1 .*6 row\(s\) do not, e\.g\. 2\b"),
      (np.where(w > 0.5, np.nan, w), ValueError, r"finite probabilities"),
    ]
    for labels, err, msg in cases:
      with self.assertRaisesRegex(err, msg):
        L.cross_entropy(z, labels)
    L.cross_entropy(z, w.astype(jnp.bfloat16))  # rounding to bf16 stays within the tolerance
    # Traced labels cannot be checked (documented): no error under jit.
    chex.assert_shape(jax.jit(L.cross_entropy)(z, w * 2), (6,))
    # Rows excluded by `where` are not checked (padding may hold anything).
    bad = w.copy()
    bad[0] = 0.0
    mask = np.arange(6) > 0
    out = L.cross_entropy(z, bad, where=mask)
    self.assertEqual(float(out[0]), 0.0)

  def test_dtypes(self):
    z, w = _soft_inputs(5, 1.0)
    for zd, wd in ((jnp.float32, jnp.bfloat16), (jnp.bfloat16, jnp.float32), (jnp.float16, jnp.float16)):
      out = L.get("nce+rce")(z.astype(zd), w.astype(wd))
      self.assertEqual(out.dtype, jnp.float32)


# ----------------------------------------------------------------------------------------------------
# axis
# ----------------------------------------------------------------------------------------------------


# Every single loss (each has its own `_validate` and `_masked` calls) and a few pairs built by `get`
# (they all go through the same `apl`).
SINGLE_NAMES = [n for n in L.names() if "+" not in n]
ARG_NAMES = SINGLE_NAMES + ["nce+rce", "ngce+mae", "nce+agce"]


class AxisTest(chex.TestCase):
  @parameterized.named_parameters(*[(n, n) for n in ARG_NAMES])
  def test_nchw_equals_moving_the_class_axis_last(self, name):
    fn = L.get(name)
    b, k, h, w = 2, 5, 3, 4
    z = jax.random.normal(jax.random.key(0), (b, k, h, w)) * 3
    y = jax.random.randint(jax.random.key(1), (b, h, w), 0, k)
    q = jax.nn.softmax(jax.random.normal(jax.random.key(2), (b, k, h, w)), axis=1)
    soft = L.info(name).soft_labels

    def run(z, y, q):
      vg = lambda z, y, **kw: (_call(fn, z, y, **kw), jax.grad(lambda z: _call(fn, z, y, **kw).sum())(z))
      z_last = jnp.moveaxis(z, 1, -1)
      out = {
        "last": vg(z_last, y),
        "ndim-1": vg(z_last, y, axis=3),
        "1": vg(z, y, axis=1),
        "-3": vg(z, y, axis=-3),
      }
      if soft:
        out["soft"] = (_call(fn, z, q, axis=1), _call(fn, z_last, jnp.moveaxis(q, 1, -1)))
      return out

    out = run(z, y, q)
    want, want_g = out["last"]
    np.testing.assert_array_equal(out["ndim-1"][0], want)  # axis = ndim - 1 is the default
    for axis in ("1", "-3"):
      got, got_g = out[axis]
      chex.assert_shape(got, (b, h, w))
      np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=f"{name} axis={axis}")
      np.testing.assert_allclose(jnp.moveaxis(got_g, 1, -1), want_g, rtol=1e-6, atol=1e-7)
    if soft:
      np.testing.assert_allclose(*out["soft"], rtol=1e-6, atol=1e-7)

  def test_normalize_and_apl_take_axis(self):
    z = jax.random.normal(jax.random.key(0), (2, 6, 3))
    y = jax.random.randint(jax.random.key(1), (2, 3), 0, 6)
    z_last = jnp.moveaxis(z, 1, -1)
    norm = jax.jit(functools.partial(L.normalize(L.poly1), epsilon=0.5), static_argnames="axis")
    _close(norm(z, y, axis=1), norm(z_last, y))
    user_loss = lambda z, y: -jnp.take_along_axis(jax.nn.log_softmax(z), y[..., None], -1)[..., 0]
    pair = L.apl(user_loss, L.rce, alpha=2.0, beta=0.5)  # a component without axis/where arguments
    _close(pair(z, y, axis=1), 2.0 * L.cross_entropy(z_last, y) + 0.5 * L.rce(z_last, y))

  def test_axis_errors(self):
    z, y = jnp.zeros((4, 3)), jnp.zeros((4,), jnp.int32)
    with self.assertRaisesRegex(
      ValueError, r"nce: `axis` = 2 is out of range for `logits` of shape \(4, 3\)"
    ):
      L.nce(z, y, axis=2)
    with self.assertRaisesRegex(TypeError, r"nce: `axis` must be an int .* a non-empty tuple of ints"):
      L.nce(z, y, axis=1.0)
    with self.assertRaisesRegex(TypeError, r"nce: `axis` must be an int"):
      L.nce(z, y, axis=())
    with self.assertRaisesRegex(ValueError, r"nce: `axis` = \(1, -1\) names an axis twice"):
      L.nce(z, y, axis=(1, -1))
    with self.assertRaisesRegex(
      ValueError, r"`labels` must have shape \(3,\) \(logits.shape without the class axis 0"
    ):
      L.nce(z, y, axis=0)


def _close(a, b, tol=1e-5):
  chex.assert_trees_all_close(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


# ----------------------------------------------------------------------------------------------------
# where
# ----------------------------------------------------------------------------------------------------


def _where_inputs(k=10):
  """Rows 1, 3, 4 excluded; they hold an ignore-index label (-1, 255, K) and NaN / inf logits."""
  z = np.asarray(jax.random.normal(jax.random.key(0), (6, k)) * 3)
  y = np.arange(6, dtype=np.int32) % k
  mask = np.array([True, False, True, False, False, True])
  y_bad, z_bad = y.copy(), z.copy()
  y_bad[[1, 3, 4]] = [-1, 255, k]
  z_bad[1, 0] = np.nan
  z_bad[3] = np.inf
  z_bad[4, 2] = -np.inf
  return z, y, mask, z_bad, y_bad


class WhereTest(chex.TestCase):
  @parameterized.named_parameters(*[(n, n) for n in ARG_NAMES])
  def test_excluded_entries_give_zero_value_and_gradient(self, name):
    fn = L.get(name)
    z, y, mask, z_bad, y_bad = _where_inputs()

    def run(z, y, z_bad, y_bad):
      masked = lambda z: _call(fn, z, y_bad, where=mask)
      # The reference: the unmasked loss on clean inputs, its excluded rows multiplied by 0.
      ref = lambda z: _call(fn, z, y) * jnp.asarray(mask, jnp.float32)
      return (masked(z_bad), jax.grad(lambda z: masked(z).sum())(z_bad)), (
        ref(z),
        jax.grad(lambda z: ref(z).sum())(z),
      )

    (value, g), (want, want_g) = run(z, y, z_bad, y_bad)
    self.assertTrue(bool(jnp.all(value[~mask] == 0.0)), f"{name}: {value}")
    self.assertTrue(bool(jnp.all(g[~mask] == 0.0)), f"{name}: gradient {g[~mask]}")
    np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(g, want_g, rtol=1e-5, atol=1e-6, err_msg=name)

  def test_soft_labels_and_normalize_with_where(self):
    z, y, mask, z_bad, _ = _where_inputs()
    q = np.asarray(jax.nn.one_hot(y, 10) * 0.8 + 0.02)
    q_bad = q.copy()
    q_bad[1] = np.nan
    q_bad[3] = 0.0
    m = jnp.asarray(mask, jnp.float32)
    for fn in (L.get("nce+rce"), L.sce, L.normalize(L.agce)):
      got, g = jax.value_and_grad(lambda z: fn(z, q_bad, where=mask).sum())(z_bad)
      want, want_g = jax.value_and_grad(lambda z: (fn(z, q) * m).sum())(z)
      np.testing.assert_allclose(got, want, rtol=1e-5)
      self.assertTrue(bool(jnp.all(g[~mask] == 0.0)))
      np.testing.assert_allclose(g, want_g, rtol=1e-5, atol=1e-6)
    # normalize with integer ignore-index labels, and apl of a loss without a `where` argument
    user_loss = lambda z, y: jax.nn.logsumexp(z, -1) - jnp.take_along_axis(z, y[..., None], -1)[..., 0]
    _, _, _, z_bad, y_bad = _where_inputs()
    for fn in (L.normalize(L.cross_entropy), L.apl(user_loss, L.mae)):
      got, g = jax.value_and_grad(lambda z: fn(z, y_bad, where=mask).sum())(z_bad)
      self.assertTrue(bool(jnp.isfinite(got)))
      self.assertTrue(bool(jnp.all(g[~mask] == 0.0)))
    # Under jit, with the mask and the labels as traced arguments.
    step = jax.jit(jax.value_and_grad(lambda z, q, m: L.get("nce+rce")(z, q, where=m).sum()))
    got, g = step(z_bad, q_bad, mask)
    want = (L.get("nce+rce")(z, q) * m).sum()
    np.testing.assert_allclose(got, want, rtol=1e-5)
    self.assertTrue(bool(jnp.all(g[~mask] == 0.0)))

  def test_where_errors(self):
    z, y, mask, _, _ = _where_inputs()
    with self.assertRaisesRegex(TypeError, r"nce: `where` must be a boolean mask .* got dtype float32"):
      L.nce(z, y, where=mask.astype(np.float32))
    with self.assertRaisesRegex(ValueError, r"rce: `where` must have shape \(6,\), one entry per example"):
      L.rce(z, y, where=mask[:5])
    with self.assertRaisesRegex(ValueError, r"A class mask of logits' shape .* is not supported"):
      L.get("nce+rce")(z, y, where=np.ones(z.shape, bool))


# ----------------------------------------------------------------------------------------------------
# get(): signature, docstring, overrides, metadata
# ----------------------------------------------------------------------------------------------------


class GetSignatureTest(chex.TestCase):
  def test_single_loss_signature_and_docstring(self):
    fn = L.get("gce", q=0.5)
    sig = inspect.signature(fn)
    params = sig.parameters
    self.assertEqual(list(params)[:2], ["logits", "labels"])
    self.assertEqual(params["q"].default, 0.5)
    self.assertEqual(params["q"].kind, inspect.Parameter.KEYWORD_ONLY)
    self.assertEqual(params["min_prob"].default, None)
    self.assertEqual(params["scale"].default, 1.0)
    self.assertEqual((params["axis"].default, params["where"].default), (-1, None))
    self.assertEqual(params["axis"].kind, inspect.Parameter.POSITIONAL_OR_KEYWORD)  # as optax
    self.assertTrue(inspect.getdoc(fn).startswith("Generalized cross entropy"))
    self.assertIn("Zhang & Sabuncu", pydoc.render_doc(fn))
    self.assertIn("get('gce', q=0.5, min_prob=None, scale=1.0)", fn.__doc__)
    self.assertEqual(
      (fn.name, fn.kind, fn.needs_key, fn.params),
      ("gce", "active", False, {"q": 0.5, "min_prob": None, "scale": 1.0}),
    )
    self.assertIn("Zhang", fn.reference)
    self.assertIn("key", inspect.signature(L.get("nlnl")).parameters)

  def test_pair_signature_and_docstring(self):
    fn = L.get("nce+rce", beta=2.0, log_zero=-6.0)
    params = inspect.signature(fn).parameters
    self.assertEqual(
      list(params), ["logits", "labels", "axis", "where", "alpha", "beta", "log_zero", "min_prob"]
    )
    self.assertEqual(
      (params["alpha"].default, params["beta"].default, params["log_zero"].default), (1.0, 2.0, -6.0)
    )
    doc = inspect.getdoc(fn)
    self.assertTrue(doc.startswith("alpha * nce + beta * rce"))
    self.assertIn("nce: Normalized cross entropy", doc)
    self.assertIn("key", inspect.signature(L.get("nce+nlnl")).parameters)
    self.assertEqual(fn.params, {"alpha": 1.0, "beta": 2.0, "log_zero": -6.0, "min_prob": None})

  def test_call_keywords_override_bound_values(self):
    z = jax.random.normal(jax.random.key(0), (6, 10)) * 3
    y = jnp.arange(6)
    _close(L.get("gce", q=0.5)(z, y, q=0.3), L.gce(z, y, q=0.3))
    _close(L.get("ngce", scale=10.0, q=0.5)(z, y, q=0.3), 10.0 * L.ngce(z, y, q=0.3))
    _close(L.get("nce+rce", beta=2.0)(z, y, beta=0.5), L.nce(z, y) + 0.5 * L.rce(z, y))
    fn = L.get("nfl+rce", gamma=1.0, log_zero=-6.0)
    _close(fn(z, y, gamma=2.0), L.nfl(z, y, gamma=2.0) + L.rce(z, y, log_zero=-6.0))
    # Parameters not given to `get` are in the signature too (with their defaults) and can be passed.
    _close(L.get("nce+rce", beta=2.0)(z, y, log_zero=-6.0), L.nce(z, y) + 2.0 * L.rce(z, y, log_zero=-6.0))
    _close(L.get("nce")(z, y, scale=3.0), 3.0 * L.nce(z, y))

  def test_call_arguments_cannot_be_bound(self):
    for arg, value in (("axis", 1), ("where", None), ("key", None)):
      with self.assertRaisesRegex(TypeError, rf"get\('nce\+rce'\): `{arg}` is an argument of each call"):
        L.get("nce+rce", **{arg: value})
    self.assertNotIn("axis", L.info("gce").params)
    self.assertNotIn("where", L.info("nce+rce").params)
