"""aplx.losses: the paper's properties, limit identities, numerics, shapes, transforms, registry and
every error message."""

import functools
import math
from unittest import mock

from absl.testing import parameterized
import chex
import jax
from jax.experimental import checkify
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

import aplx.losses as L
from aplx.losses import _base


def _logits(shape, scale=3.0, seed=0):
  return jax.random.normal(jax.random.key(seed), shape, jnp.float32) * scale


def _labels(shape, k, seed=1):
  return jax.random.randint(jax.random.key(seed), shape, 0, k)


def _call(fn, z, y):
  kw = {"key": jax.random.key(7)} if getattr(fn, "needs_key", False) else {}
  return fn(z, y, **kw)


def _close(a, b, tol=1e-5):
  chex.assert_trees_all_close(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


# ----------------------------------------------------------------------------------------------------
# Paper properties
# ----------------------------------------------------------------------------------------------------

NORMALIZED = {
  "nce": L.nce,
  "nfl": functools.partial(L.nfl, gamma=0.5),
  "nfl_g2": functools.partial(L.nfl, gamma=2.0),
  "nmae": L.nmae,
  "nrce": L.nrce,
  "ngce": functools.partial(L.ngce, q=0.7),
  "ngce_q0.1": functools.partial(L.ngce, q=0.1),
  "normalize(poly1)": L.normalize(L.poly1),
  "normalize(agce)": L.normalize(L.agce),
}


class PropertiesTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*[(n, n) for n in NORMALIZED])
  def test_normalized_in_unit_interval_and_sums_to_one(self, name):
    fn = self.variant(NORMALIZED[name])
    for k, scale in [(2, 1.0), (10, 3.0), (100, 10.0)]:
      z = _logits((6, k), scale)
      per_label = jnp.stack([fn(z, jnp.full((6,), j)) for j in range(k)], axis=-1)
      self.assertTrue(bool(jnp.all((per_label >= -1e-6) & (per_label <= 1 + 1e-6))))
      _close(per_label.sum(-1), np.ones(6), tol=2e-5)

  def test_nfl_stays_in_unit_interval_at_large_logits(self):
    # K = 2 and logits ~100: NFL's fast path (Python gamma) computes its numerator and denominator by
    # different routes, which overshot 1 by up to ~4e-6 before the ratio was clipped.
    z = _logits((20000, 2), 100.0)
    for y in (jnp.zeros(20000, jnp.int32), jnp.ones(20000, jnp.int32)):
      for gamma in (0.5, 2.0):
        v = L.nfl(z, y, gamma=gamma)
        self.assertLessEqual(float(v.max()), 1.0)
        self.assertGreater(float(v.max()), 1.0 - 1e-3)  # Near-1 losses are there to overshoot.
    # The clip leaves the gradient alone, also where the ratio is exactly 1 in float32 (a confidently
    # wrong example) and with the normaliser detached, where that gradient is not ~0: it is the
    # numerator's gradient over the (constant) sum of FL over the labels.
    z, y = jnp.array([[0.0, 30.0], [0.0, 60.0], [0.0, 3.0]]), jnp.zeros(3, jnp.int32)
    for sg in (False, True):

      def want(z, sg=sg):
        den = sum(L.focal_loss(z, jnp.full((3,), j), gamma=0.5) for j in range(2))
        return L.focal_loss(z, y, gamma=0.5) / (jax.lax.stop_gradient(den) if sg else den)

      got = jax.jacrev(lambda z, sg=sg: L.nfl(z, y, gamma=0.5, stop_gradient_normalizer=sg))(z)
      _close(got, jax.jacrev(want)(z), tol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_nmae_nrce_are_scaled_mae_rce(self):
    for k in (2, 10, 100):
      z, y = _logits((8, k)), _labels((8,), k)
      _close(self.variant(L.nmae)(z, y), L.mae(z, y) / (2 * (k - 1)))
      for a in (-4.0, L.AUTHORS_LOG_ZERO, -1.0):
        nrce = self.variant(functools.partial(L.nrce, log_zero=a))
        _close(nrce(z, y), L.rce(z, y, log_zero=a) / (-a * (k - 1)))

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
    ("ce", L.cross_entropy, L.nce),
    ("fl", functools.partial(L.focal_loss, gamma=0.5), functools.partial(L.nfl, gamma=0.5)),
    ("gce", functools.partial(L.gce, q=0.7), functools.partial(L.ngce, q=0.7)),
    ("mae", L.mae, L.nmae),
    ("rce", L.rce, L.nrce),
  )
  def test_normalize_equals_closed_form(self, base, closed):
    norm = self.variant(L.normalize(base))
    closed_v = self.variant(closed)
    gn = self.variant(jax.grad(lambda z, y: L.normalize(base)(z, y).sum()))
    gc = self.variant(jax.grad(lambda z, y: closed(z, y).sum()))
    for k in (2, 10, 30):
      z, y = _logits((6, k)), _labels((6,), k)
      _close(norm(z, y), closed_v(z, y), tol=2e-5)
      _close(gn(z, y), gc(z, y), tol=5e-5)

  def test_normalize_keeps_metadata_and_passes_kwargs(self):
    n = L.normalize(L.gce)
    self.assertEqual(n.kind, "active")
    z, y = _logits((4, 5)), _labels((4,), 5)
    _close(n(z, y, q=0.3), L.ngce(z, y, q=0.3))
    self.assertTrue(L.normalize(L.nlnl).needs_key)

  @chex.variants(with_jit=True, without_jit=True)
  def test_apl_is_linear_in_alpha_beta(self):
    z, y = _logits((8, 10)), _labels((8,), 10)
    nce, rce = L.nce(z, y), L.rce(z, y)
    for a, b in [(1.0, 1.0), (10.0, 0.1), (0.0, 2.0), (3.0, 0.0)]:
      got = self.variant(lambda z, y: L.get("nce+rce", alpha=a, beta=b)(z, y))(z, y)
      _close(got, a * nce + b * rce)
      got2 = self.variant(L.apl(L.nce, L.rce, alpha=a, beta=b))(z, y)
      _close(got2, a * nce + b * rce)
    # linearity: L(a1 + a2) = L(a1) + L(a2) - L(0) for the same beta
    f = lambda a: L.get("nfl+mae", alpha=a, beta=0.5, gamma=0.5)(z, y)
    _close(f(3.0), f(1.0) + f(2.0) - f(0.0))

  def test_limit_identities(self):
    for k in (2, 10, 100):
      z, y = _logits((8, k), 4.0), _labels((8,), k)
      _close(L.gce(z, y, q=1.0), L.mae(z, y) / 2)
      _close(L.focal_loss(z, y, gamma=0.0), L.cross_entropy(z, y))
      _close(L.nfl(z, y, gamma=0.0), L.nce(z, y))
      _close(L.taylor_ce(z, y, order=1), L.mae(z, y) / 2)
      _close(L.poly1(z, y, epsilon=0.0), L.cross_entropy(z, y))
      _close(L.ce_eps(z, y, m=0.0), L.cross_entropy(z, y))
      _close(L.gce(z, y, q=1e-4), L.cross_entropy(z, y), tol=5e-3 * 10)
      # Taylor CE -> CE as the order grows (geometric convergence once p_y >= 1/2)
      zc = z.at[jnp.arange(8), y].add(40.0)
      _close(L.taylor_ce(zc, y, order=40), L.cross_entropy(zc, y), tol=1e-5)
      _close(L.mae(z, y, halved=True), L.mae(z, y) / 2)
      _close(L.sce(z, y, alpha=0.3, beta=2.0), 0.3 * L.cross_entropy(z, y) + 2.0 * L.rce(z, y))
      _close(L.get("nce+rce", beta=0.0)(z, y), L.nce(z, y))

  def test_active_passive_metadata_matches_table_1(self):
    for name in ("ce", "nce", "fl", "nfl", "gce", "ngce"):
      self.assertEqual(L.get(name).kind, "active", name)
      self.assertEqual(L.info(name).kind, "active", name)
    for name in ("mae", "nmae", "rce", "nrce", "nlnl", "nnce", "nnfl"):
      self.assertEqual(L.get(name).kind, "passive", name)
    for name in (
      "nce+rce",
      "nce+mae",
      "nfl+rce",
      "nfl+mae",
      "ngce+rce",
      "ngce+mae",
      "sce",
      "anl-ce",
      "anl-fl",
      "ce-eps+mae",
    ):
      self.assertEqual(L.get(name).kind, "active+passive", name)
    self.assertEqual(L.get("nfl+nce").kind, "active+active")
    self.assertEqual(L.get("mae+rce").kind, "passive+passive")
    for fn in (L.cross_entropy, L.nce, L.mae, L.rce):
      self.assertIn(fn.kind, ("active", "passive"))

  def test_needs_key_only_for_nlnl(self):
    for name in L.names():
      self.assertEqual(L.get(name).needs_key, name == "nlnl", name)
    self.assertTrue(L.get("nce+nlnl").needs_key)


# ----------------------------------------------------------------------------------------------------
# Numerics: extreme logits, low precision
# ----------------------------------------------------------------------------------------------------


def _extreme_logits(k, dtype):
  rows = [
    jnp.zeros((k,)),  # uniform
    jnp.full((k,), 1e4),  # all huge
    jnp.zeros((k,)).at[0].set(1e4),  # label class wins by 1e4
    jnp.zeros((k,)).at[1].set(1e4),  # another class wins by 1e4
    jnp.zeros((k,)).at[0].set(-1e4),  # label class loses by 1e4
    jnp.linspace(-1e4, 1e4, k),
    jax.random.uniform(jax.random.key(k), (k,), minval=-1e4, maxval=1e4),
    jnp.full((k,), -1e4).at[1].set(1e4),
  ]
  return jnp.stack(rows).astype(dtype), jnp.zeros((len(rows),), jnp.int32)


def _assert_finite_everywhere(test, fn, k, dtype, name):
  z, y = _extreme_logits(k, dtype)

  @jax.jit
  def run(z, y):
    v = _call(fn, z, y)
    g = jax.grad(lambda z: _call(fn, z, y).sum())(z)
    return v, g

  v, g = run(z, y)
  test.assertEqual(v.dtype, jnp.float32, name)
  test.assertEqual(g.dtype, dtype, name)
  test.assertTrue(bool(jnp.all(jnp.isfinite(v))), f"{name} K={k} {dtype}: value {v}")
  test.assertTrue(
    bool(jnp.all(jnp.isfinite(g.astype(jnp.float32)))), f"{name} K={k} {dtype}: gradient not finite"
  )


class NumericsTest(chex.TestCase):
  @parameterized.named_parameters(*[(n, n) for n in L.names()])
  def test_no_nan_or_inf_for_extreme_logits(self, name):
    fn = L.get(name)
    for k, dtype in [(2, jnp.bfloat16), (10_000, jnp.float32)]:
      _assert_finite_everywhere(self, fn, k, dtype, name)

  @parameterized.named_parameters(*[(n, n) for n in L.names()])
  def test_low_precision_inputs_are_computed_in_float32(self, name):
    fn = L.get(name)
    z, y = _logits((6, 10), 5.0), _labels((6,), 10)
    for dtype in (jnp.bfloat16, jnp.float16):
      zl = z.astype(dtype)
      got = _call(fn, zl, y)
      self.assertEqual(got.dtype, jnp.float32)
      _close(got, _call(fn, zl.astype(jnp.float32), y), tol=1e-6)

  def test_float64_input_gives_float64(self):
    # Older jax (the 0.4.38 floor that .ci/run tests) has only jax.experimental.enable_x64.
    enable_x64 = jax.enable_x64 if hasattr(jax, "enable_x64") else jax.experimental.enable_x64
    with enable_x64(True):
      z = jnp.asarray(np.random.default_rng(0).standard_normal((4, 10)), jnp.float64)
      y = jnp.arange(4)
      for name in ("ce", "nce+rce", "ngce", "nfl"):
        self.assertEqual(L.get(name)(z, y).dtype, jnp.float64, name)

  def test_label_dtypes(self):
    # Every integer dtype gives the same losses; out-of-range ids (negative, >= K, or unsigned ids past
    # int32's range) give NaN. With x64 on too: uint64 ids must not promote to a float index.
    enable_x64 = jax.enable_x64 if hasattr(jax, "enable_x64") else jax.experimental.enable_x64
    z = np.random.default_rng(1).standard_normal((3, 5)).astype(np.float32)
    want = np.asarray(L.cross_entropy(z, np.array([0, 4, 2], np.int32)))
    for x64 in (False, True):
      with enable_x64(x64):
        for dtype in (np.int8, np.int16, np.int64, np.uint8, np.uint32, np.uint64):
          got = np.asarray(L.cross_entropy(z, np.array([0, 4, 2], dtype)))
          np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=f"{dtype} x64={x64}")
        bad = np.asarray(L.cross_entropy(z, np.array([5, 2**32 - 1, 1], np.uint64)))
        self.assertTrue(np.isnan(bad[:2]).all() and np.isfinite(bad[2]), f"x64={x64}: {bad}")

  def test_ngce_gradient_at_underflowing_probability(self):
    # p_y = exp(-2e4) underflows to 0: the naive d/dp p^q = q p^(q-1) is inf there.
    z = jnp.array([[-1e4, 1e4, 0.0]])
    for q in (0.1, 0.5, 0.7, 1.0):
      g = jax.grad(lambda z: L.ngce(z, jnp.array([0]), q=q).sum())(z)
      self.assertTrue(bool(jnp.all(jnp.isfinite(g))), q)
      g = jax.grad(lambda z: L.gce(z, jnp.array([0]), q=q).sum())(z)
      self.assertTrue(bool(jnp.all(jnp.isfinite(g))), q)


@pytest.mark.slow
class SlowNumericsTest(chex.TestCase):
  """Every K in {2, 3, 10, 100, 1000, 10000} x {float32, bfloat16, float16}: ~4 min on 2 CPU cores."""

  @parameterized.named_parameters(*[(n, n) for n in L.names()])
  def test_no_nan_or_inf_full_sweep(self, name):
    fn = L.get(name)
    for k in (2, 3, 10, 100, 1000, 10_000):
      for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
        _assert_finite_everywhere(self, fn, k, dtype, name)


# ----------------------------------------------------------------------------------------------------
# Shapes and transforms
# ----------------------------------------------------------------------------------------------------


class ShapesAndTransformsTest(chex.TestCase):
  @parameterized.named_parameters(*[(n, n) for n in L.names()])
  def test_batch_shapes_b_and_bt(self, name):
    fn = L.get(name)
    z, y = _logits((3, 4, 7)), _labels((3, 4), 7)
    kw = {"key": jax.random.key(0)} if fn.needs_key else {}
    out_bt = fn(z, y, **kw)
    chex.assert_shape(out_bt, (3, 4))
    if not fn.needs_key:  # nlnl draws per position, so only shapes are comparable
      out_b = fn(z.reshape(12, 7), y.reshape(12))
      chex.assert_shape(out_b, (12,))
      _close(out_bt.reshape(12), out_b)
      chex.assert_shape(fn(z[0, 0], y[0, 0]), ())  # a single example, labels of shape []

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
    ("nce+rce", "nce+rce"), ("nfl+mae", "nfl+mae"), ("ngce+rce", "ngce+rce"), ("anl-ce", "anl-ce")
  )
  def test_vmap_and_grad(self, name):
    fn = L.get(name)
    z, y = _logits((5, 4, 10)), _labels((5, 4), 10)
    per = self.variant(jax.vmap(fn))(z, y)
    _close(per, fn(z, y))
    g = self.variant(jax.vmap(jax.grad(lambda z, y: fn(z, y).sum())))(z, y)
    _close(g, jax.grad(lambda z: fn(z, y).sum())(z))

  def test_sharded_batch_equals_single_device(self):
    mesh = jax.make_mesh((8,), ("data",))
    z, y = _logits((64, 10)), _labels((64,), 10)
    zs = jax.device_put(z, NamedSharding(mesh, P("data")))
    ys = jax.device_put(y, NamedSharding(mesh, P("data")))
    for name in ("nce+rce", "nfl+mae", "ngce+mae"):
      fn = L.get(name)
      step = jax.jit(jax.value_and_grad(lambda z, y: fn(z, y).mean()))
      v1, g1 = step(z, y)
      v8, g8 = step(zs, ys)
      _close(v8, v1)
      _close(g8, g1)
      self.assertEqual(g8.sharding.spec[0], "data")

  def test_no_retrace_across_calls(self):
    fn = L.get("nce+rce")

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(z, y):
      return fn(z, y).mean()

    for seed in range(3):
      step(_logits((8, 10), seed=seed), _labels((8,), 10, seed=seed))


# ----------------------------------------------------------------------------------------------------
# NLNL key handling
# ----------------------------------------------------------------------------------------------------


class NLNLTest(chex.TestCase):
  def test_complementary_labels_are_uniform_over_other_classes(self):
    k, n = 5, 20000
    z = jnp.zeros((n, k)).at[:, 0].set(3.0)  # p_0 large: loss reveals which class was drawn
    y = jnp.full((n,), 2)
    loss = L.nlnl(z, y, key=jax.random.key(0))
    p0 = jax.nn.softmax(z[0])[0]
    drew0 = jnp.isclose(loss, -jnp.log1p(-p0), rtol=1e-5)
    frac = float(drew0.mean())
    self.assertAlmostEqual(frac, 1 / (k - 1), delta=0.02)
    # a label never is its own complementary label: with p_y = 1, -log(1 - p_ybar) = 0
    z1 = jnp.zeros((1000, k)).at[:, 2].set(1e4)
    self.assertTrue(bool(jnp.all(L.nlnl(z1, y[:1000], key=jax.random.key(1)) < 1e-6)))

  def test_key_changes_draw_and_is_deterministic(self):
    z, y = _logits((64, 10)), _labels((64,), 10)
    a = L.nlnl(z, y, key=jax.random.key(0))
    _close(a, L.nlnl(z, y, key=jax.random.key(0)))
    self.assertFalse(np.allclose(a, L.nlnl(z, y, key=jax.random.key(1))))

  def test_options(self):
    z, y = _logits((16, 10)), _labels((16,), 10)
    key = jax.random.key(0)
    w = jnp.arange(1.0, 11.0)
    _close(L.nlnl(z, y, key=key, class_weight=w), L.nlnl(z, y, key=key) * w[y])
    many = L.nlnl(z, y, key=key, num_negatives=4)
    chex.assert_shape(many, (16,))
    z_big = jnp.zeros((2, 3)).at[:, 1].set(1e4)
    capped = L.nlnl(z_big, jnp.array([0, 0]), key=key, num_negatives=8, min_prob=1e-5)
    self.assertTrue(bool(jnp.all(capped <= -8 * math.log(1e-5) + 1e-3)))  # 8 terms, each capped

  def test_get_and_apl_pass_the_key(self):
    fn = L.get("nce+nlnl", alpha=1.0, beta=0.5)
    z, y = _logits((8, 10)), _labels((8,), 10)
    key = jax.random.key(4)
    _close(fn(z, y, key=key), L.nce(z, y) + 0.5 * L.nlnl(z, y, key=key))
    with self.assertRaisesRegex(ValueError, "needs a PRNG key"):
      fn(z, y)
    # apl sees through functools.partial, which carries no `needs_key` attribute
    pair = L.apl(L.nce, functools.partial(L.nlnl, num_negatives=2), beta=0.5)
    self.assertTrue(pair.needs_key)
    _close(pair(z, y, key=key), L.nce(z, y) + 0.5 * L.nlnl(z, y, key=key, num_negatives=2))


# ----------------------------------------------------------------------------------------------------
# Out-of-range labels
# ----------------------------------------------------------------------------------------------------


class LabelCheckTest(chex.TestCase):
  @parameterized.named_parameters(*[(n, n) for n in L.names()])
  def test_out_of_range_labels_give_nan_under_jit(self, name):
    fn = L.get(name)
    z = _logits((4, 5))
    y = jnp.array([0, 5, -1, 4])
    out = jax.jit(lambda z, y: _call(fn, z, y))(z, y)
    if fn.batch_level:  # One value for the batch: NaN for all.
      self.assertTrue(bool(jnp.all(jnp.isnan(out))), f"{name}: {out}")
      return
    self.assertTrue(bool(jnp.isfinite(out[0]) & jnp.isfinite(out[3])), name)
    self.assertTrue(bool(jnp.isnan(out[1]) & jnp.isnan(out[2])), f"{name}: {out}")

  def test_check_labels_eager(self):
    L.check_labels(jnp.array([0, 4]), 5)
    with self.assertRaisesRegex(ValueError, r"2 label\(s\) outside \[0, 5\).*values \[5, -1\]"):
      L.check_labels(np.array([0, 5, -1]), 5)
    with self.assertRaisesRegex(TypeError, "integers"):
      L.check_labels(np.array([0.0]), 5)

  def test_check_labels_with_checkify_under_jit(self):
    @jax.jit
    def step(z, y):
      L.check_labels(y, z.shape[-1])
      return L.nce(z, y).mean()

    checked = checkify.checkify(step)
    err, _ = checked(_logits((2, 5)), jnp.array([0, 4]))
    err.throw()
    err, _ = checked(_logits((2, 5)), jnp.array([0, 7]))
    with self.assertRaisesRegex(checkify.JaxRuntimeError, r"labels must be in \[0, 5\)"):
      err.throw()


# ----------------------------------------------------------------------------------------------------
# Registry and error messages
# ----------------------------------------------------------------------------------------------------

PAPER_NAMES = [
  "ce",
  "fl",
  "mae",
  "rce",
  "gce",
  "sce",
  "nce",
  "nfl",
  "nmae",
  "nrce",
  "ngce",
  "nce+rce",
  "nce+mae",
  "nfl+rce",
  "nfl+mae",
  "ngce+rce",
  "ngce+mae",
  "nfl+nce",
  "mae+rce",
]


class RegistryTest(chex.TestCase):
  def test_all_paper_and_beyond_names_registered(self):
    for name in PAPER_NAMES + [
      "nnce",
      "nnfl",
      "anl-ce",
      "anl-fl",
      "agce",
      "aul",
      "ael",
      "nce+agce",
      "nce+aul",
      "nce+ael",
      "poly1",
      "taylor-ce",
      "ce-eps",
      "ce-eps+mae",
      "nlnl",
    ]:
      self.assertIn(name, L.names())
      self.assertIsInstance(L.info(name), L.LossInfo)

  def test_aliases_and_spelling(self):
    z, y = _logits((4, 10)), _labels((4,), 10)
    _close(L.get("ANL_CE")(z, y), L.get("anl-ce")(z, y))
    _close(L.get(" NCE+RCE ")(z, y), L.get("nce+rce")(z, y))
    _close(L.get("focal", gamma=1.0)(z, y), L.focal_loss(z, y, gamma=1.0))

  def test_params_are_routed_to_components(self):
    z, y = _logits((6, 10)), _labels((6,), 10)
    fn = L.get("nfl+rce", alpha=2.0, beta=0.5, gamma=1.0, log_zero=-6.0)
    _close(fn(z, y), 2.0 * L.nfl(z, y, gamma=1.0) + 0.5 * L.rce(z, y, log_zero=-6.0))
    fn = L.get("ngce+mae", q=0.1, halved=True)
    _close(fn(z, y), L.ngce(z, y, q=0.1) + L.mae(z, y, halved=True))
    fn = L.get("anl-fl", gamma=2.0)  # both terms take gamma
    _close(fn(z, y), L.nfl(z, y, gamma=2.0) + L.nnfl(z, y, gamma=2.0))
    self.assertEqual(fn.params["gamma"], 2.0)
    self.assertEqual(
      L.get("nce+rce", beta=0.1).params, {"alpha": 1.0, "beta": 0.1, "log_zero": -4.0, "min_prob": None}
    )

  def test_unknown_name_lists_valid_names(self):
    with self.assertRaisesRegex(ValueError, r"Unknown loss 'nce\+foo'\. Valid names: ce, fl, .*nlnl"):
      L.get("nce+foo")
    with self.assertRaisesRegex(ValueError, "Unknown loss 'a\\+b\\+c'"):
      L.get("a+b+c")
    with self.assertRaisesRegex(TypeError, "must be a string"):
      L.get(3)

  def test_unknown_params(self):
    with self.assertRaisesRegex(
      TypeError,
      r"get\('nce'\): unknown parameter\(s\) \['gamma'\]; "
      r"accepted: none",
    ):
      L.get("nce", gamma=0.5)
    with self.assertRaisesRegex(TypeError, r"\['q'\] are not accepted by 'nce' or 'rce'"):
      L.get("nce+rce", q=0.7)
    with self.assertRaisesRegex(TypeError, r"unknown parameter\(s\) \['qq'\]; accepted: \['min_prob', 'q'\]"):
      L.get("gce", qq=0.7)

  def test_bad_values_fail_in_get(self):
    with self.assertRaisesRegex(ValueError, r"gce: `q` must be in \(0.0, 1.0\], got 1.5"):
      L.get("gce", q=1.5)
    with self.assertRaisesRegex(ValueError, r"`log_zero` must be in \(-inf, 0.0\), got 0.0"):
      L.get("nce+rce", log_zero=0.0)
    with self.assertRaisesRegex(ValueError, r"`gamma` must be in \[0.0, inf\), got -1"):
      L.get("nfl+mae", gamma=-1)

  def test_pair_and_scale_weights_are_checked(self):
    cases = [
      (lambda: L.get("nce+rce", beta=-1.0), r"apl: `beta` must be in \[0.0, inf\), got -1.0"),
      (lambda: L.get("nce+mae", alpha=float("nan")), r"apl: `alpha` must be finite"),
      (lambda: L.get("sce", alpha=-0.1), r"sce: `alpha` must be in \[0.0, inf\)"),
      (lambda: L.get("anl-ce", beta=-5.0), r"anl_ce: `beta` must be in \[0.0, inf\)"),
      (lambda: L.get("anl-fl", alpha=float("inf")), r"anl_fl: `alpha` must be finite"),
      (lambda: L.get("nce", scale=-10.0), r"get\('nce'\): `scale` must be in \[0.0, inf\)"),
      (lambda: L.apl(L.nce, L.rce, beta=-2.0), r"apl: `beta`"),
    ]
    for fn, msg in cases:
      with self.assertRaisesRegex(ValueError, msg):
        fn()
    with self.assertRaisesRegex(TypeError, r"a pair takes `alpha` and `beta` as its weights"):
      L.get("nce+rce", scale=2.0)

  def test_scale_multiplies_a_single_loss(self):
    z, y = _logits((6, 10)), _labels((6,), 10)
    fn = L.get("ngce", scale=10.0, q=0.1)
    _close(fn(z, y), 10.0 * L.ngce(z, y, q=0.1))
    self.assertEqual(fn.params, {"q": 0.1, "min_prob": None, "scale": 10.0})
    self.assertEqual(L.info("nce").params, {"scale": 1.0})

  def test_checks_that_need_k_wait_for_the_real_k(self):
    """`get` validates on a stand-in K = 2: K-dependent checks must neither fire there nor quote it."""
    z, y = _logits((4, 10)), _labels((4,), 10)
    w = jnp.arange(1.0, 11.0)
    fn = L.get("nlnl", class_weight=w)  # raised "shape [K] = (2,)" before
    key = jax.random.key(1)
    _close(fn(z, y, key=key), w[y] * L.nlnl(z, y, key=key))
    with self.assertRaisesRegex(ValueError, r"`class_weight` must have shape \[K\] = \(5,\)"):
      fn(z[:, :5], y % 5, key=key)
    with self.assertRaisesRegex(ValueError, r"`class_weight` must have shape \[K\], one weight"):
      L.get("nlnl", class_weight=jnp.ones((2, 2)))  # wrong rank: caught without a K
    fn = L.get("rce", min_prob=0.3)  # 0.3 * 2 < 1: would have passed; 0.3 * 10 must not
    with self.assertRaisesRegex(ValueError, r"`min_prob` \* K must be < 1 \(got 0.3 \* 10\)"):
      fn(z, y)
    fn = L.get("nnce", min_prob=0.6)  # 0.6 * 2 >= 1: raised in get, quoting K = 2
    with self.assertRaisesRegex(ValueError, r"\(got 0.6 \* 10\)"):
      fn(z, y)


class ErrorMessageTest(chex.TestCase):
  def test_input_validation_messages(self):
    z, y = _logits((4, 10)), _labels((4,), 10)
    with self.assertRaisesRegex(ValueError, r"nce: `logits` must have shape \[\.\.\., num_classes\]"):
      L.nce(jnp.float32(1.0), y)
    with self.assertRaisesRegex(TypeError, r"ngce: `logits` must be floating point .*astype"):
      L.ngce(jnp.ones((4, 10), jnp.int32), y)
    with self.assertRaisesRegex(TypeError, r"nce: `labels` must be integer class ids .* float32"):
      L.nce(z, y.astype(jnp.float32))
    with self.assertRaisesRegex(
      ValueError,
      r"must have shape \(4,\) \(logits.shape without the class axis -1;.*"
      r"got \(4, 10\)\. It looks one-hot: pass labels.argmax\(-1\), or labels.astype\(jnp.float32\)",
    ):
      L.nce(z, jax.nn.one_hot(y, 10).astype(jnp.int32))
    with self.assertRaisesRegex(ValueError, r"rce: `labels` must have shape .* got \(3,\)"):
      L.rce(z, y[:3])
    with self.assertRaisesRegex(ValueError, r"at least 2 classes .* got K = 1"):
      L.cross_entropy(jnp.ones((4, 1)), jnp.zeros((4,), jnp.int32))
    with self.assertRaisesRegex(ValueError, r"nfl: `labels` must have shape"):
      jax.jit(L.nfl)(z, jnp.zeros((4, 2), jnp.int32))  # trace-time error under jit

  def test_hyperparameter_messages(self):
    z, y = _logits((4, 10)), _labels((4,), 10)
    cases = [
      (lambda: L.gce(z, y, q=0.0), r"gce: `q` must be in \(0.0, 1.0\], got 0.0\. GCE needs"),
      (lambda: L.ngce(z, y, q=2.0), r"ngce: `q` must be in \(0.0, 1.0\]"),
      (lambda: L.focal_loss(z, y, gamma=-0.5), r"focal_loss: `gamma` must be in \[0.0, inf\)"),
      (lambda: L.nfl(z, y, gamma=float("nan")), r"nfl: `gamma` must be finite"),
      (lambda: L.rce(z, y, log_zero=1.0), r"rce: `log_zero` must be in \(-inf, 0.0\).*AUTHORS"),
      (lambda: L.nrce(z, y, log_zero=0.0), r"nrce: `log_zero`"),
      (lambda: L.sce(z, y, log_zero=0.5), r"sce: `log_zero`"),
      (lambda: L.nnce(z, y, min_prob=0.2), r"nnce: `min_prob` \* K must be < 1"),
      (lambda: L.rce(z, y, min_prob=0.0), r"rce: `min_prob` must be in \(0.0, 1.0\)"),
      (lambda: L.agce(z, y, a=0.0), r"agce: `a` must be in \(0.0, inf\)"),
      (lambda: L.agce(z, y, q=-1.0), r"agce: `q` must be in \(0.0, inf\)"),
      (lambda: L.aul(z, y, a=1.0), r"aul: `a` must be in \(1.0, inf\), got 1.0. AUL needs a > 1"),
      (lambda: L.ael(z, y, a=-2.0), r"ael: `a` must be in \(0.0, inf\)"),
      (lambda: L.poly1(z, y, epsilon=-2.0), r"poly1: `epsilon` must be in \[-1.0, inf\)"),
      (lambda: L.taylor_ce(z, y, order=0), r"taylor_ce: `order` must be a Python int >= 1"),
      (lambda: L.taylor_ce(z, y, order=2.0), r"taylor_ce: `order` must be a Python int"),
      (lambda: L.ce_eps(z, y, m=-1.0), r"ce_eps: `m` must be in \[0.0, inf\)"),
      (lambda: L.nlnl(z, y, key=None), r"nlnl: needs a PRNG `key=`"),
      (lambda: L.nlnl(z, y, key=jax.random.key(0), num_negatives=0), r"`num_negatives`"),
      (
        lambda: L.nlnl(z, y, key=jax.random.key(0), class_weight=jnp.ones(3)),
        r"`class_weight` must have shape \[K\] = \(10,\)",
      ),
      (lambda: L.gce(z, y, q=True), r"gce: `q` must be a number, got the bool"),
    ]
    for fn, msg in cases:
      with self.assertRaisesRegex((ValueError, TypeError), msg):
        fn()

  def test_traced_hyperparameters_are_accepted(self):
    z, y = _logits((4, 10)), _labels((4,), 10)
    f = jax.jit(lambda z, y, q: L.gce(z, y, q=q))
    _close(f(z, y, 0.5), L.gce(z, y, q=0.5))


# ----------------------------------------------------------------------------------------------------
# NFL's and NGCE's hand-written JVP (_base._lse_and_sum) against plain autodiff of the same formula
# ----------------------------------------------------------------------------------------------------

_ENABLE_X64 = jax.enable_x64 if hasattr(jax, "enable_x64") else jax.experimental.enable_x64


_LSE_AND_SUM = _base._lse_and_sum  # Unpatched, for the call counter below.


class HandWrittenJvpTest(parameterized.TestCase):
  """With Python hyperparameters and integer labels, NFL and NGCE differentiate their normalizer
  through a hand-written JVP; with the same hyperparameter as a jax array they take plain autodiff.
  Both must agree in value, gradient, JVP and Hessian-vector product (float64, tight tolerance),
  also where the clamps act (confident rows: p rounds to 1; tiny p below min_prob)."""

  CASES = (
    ("nfl", {"gamma": 0.5}),
    ("nfl", {"gamma": 2.0}),
    ("nfl", {"gamma": 1.7}),  # Not a half-integer: exp(gamma log u).
    ("nfl", {"gamma": 0.0}),
    ("nfl", {"gamma": 0.5, "detach_focal_factor": True}),
    ("ngce", {"q": 0.7}),
    ("ngce", {"q": 0.1, "min_prob": 1e-7}),
    ("ngce", {"q": 1.0}),
  )

  def _inputs(self, dtype):
    k = 50
    z = np.asarray(_logits((6, k), scale=3.0, seed=3), np.float64)
    z[0, 3] = 60.0  # p_3 rounds to 1 in float32 and float64: the focal clamp acts.
    z[1] = 0.0
    z[1, 0] = -40.0  # p_0 ~ 4e-18 < min_prob: NGCE's clamp acts.
    y = np.array(_labels((6,), k, seed=4))
    y[0] = 3
    return jnp.asarray(z, dtype), jnp.asarray(y)

  @parameterized.parameters(*CASES)
  def test_matches_autodiff(self, name, params):
    fn = getattr(L, name)
    hyper = "gamma" if name == "nfl" else "q"
    with _ENABLE_X64(True):
      z, y = self._inputs(jnp.float64)
      fast = lambda z: fn(z, y, **params).sum()  # noqa: E731
      plain = lambda z: fn(z, y, **{**params, hyper: jnp.asarray(params[hyper])}).sum()  # noqa: E731
      calls = []  # The two paths differ: only the fast one goes through _lse_and_sum.
      with mock.patch.object(_base, "_lse_and_sum", lambda *a: calls.append(1) or _LSE_AND_SUM(*a)):
        jax.make_jaxpr(fast)(z)
        self.assertLen(calls, 1)
        jax.make_jaxpr(plain)(z)
        self.assertLen(calls, 1)
      v = jnp.asarray(np.random.default_rng(5).standard_normal(z.shape))
      for f in (lambda g: g, jax.jit):
        np.testing.assert_allclose(f(fast)(z), plain(z), rtol=1e-12)
        np.testing.assert_allclose(f(jax.grad(fast))(z), jax.grad(plain)(z), rtol=1e-9, atol=1e-14)
        np.testing.assert_allclose(
          jax.jvp(fast, (z,), (v,))[1], jax.jvp(plain, (z,), (v,))[1], rtol=1e-9, atol=1e-14
        )
      hvp = lambda f: jax.jvp(jax.grad(f), (z,), (v,))[1]  # noqa: E731
      np.testing.assert_allclose(hvp(fast), hvp(plain), rtol=1e-7, atol=1e-10)
      self.assertTrue(np.all(np.isfinite(jax.grad(fast)(z))))

  @parameterized.parameters(*CASES)
  def test_float32_gradient_finite_and_close(self, name, params):
    fn = getattr(L, name)
    hyper = "gamma" if name == "nfl" else "q"
    z, y = self._inputs(jnp.float32)
    g_fast = jax.grad(lambda z: fn(z, y, **params).sum())(z)
    g_plain = jax.grad(lambda z: fn(z, y, **{**params, hyper: jnp.asarray(params[hyper])}).sum())(z)
    self.assertTrue(np.all(np.isfinite(g_fast)))
    np.testing.assert_allclose(g_fast, g_plain, rtol=2e-4, atol=2e-6 * float(jnp.abs(g_plain).max()))
