"""What `aplx.losses.get` returns, as a user's own training code meets it: every hyperparameter visible
and overridable per call, equality / hashing / pickling (a static jit argument does not recompile), and
optax's calling conventions (positional `axis` and `where`, a tuple of class axes)."""

import inspect
import pickle

from absl.testing import absltest, parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

import aplx.losses as L

ALL_NAMES = list(L.names()) + ["gce+nce", "nfl+nnfl"] + list(L.authors_class_names())


def _inputs(shape=(6, 10), seed=0):
  z = jax.random.normal(jax.random.key(seed), shape) * 3
  y = jnp.arange(int(np.prod(shape[:-1]))).reshape(shape[:-1]) % shape[-1]
  return z, y


def _call(fn, z, y, *args, **kw):
  if fn.needs_key:
    kw["key"] = jax.random.key(3)
  return fn(z, y, *args, **kw)


class HyperparametersTest(chex.TestCase):
  @parameterized.named_parameters(*[(n, n) for n in ALL_NAMES])
  def test_signature_and_params_list_every_hyperparameter(self, name):
    fn = L.get(name)
    params = inspect.signature(fn).parameters
    self.assertEqual(list(params)[:4], ["logits", "labels", "axis", "where"])
    hyper = {k: p.default for k, p in params.items() if p.kind == p.KEYWORD_ONLY and k != "key"}
    self.assertEqual(hyper, fn.params)
    self.assertEqual(fn.params, L.info(name).params)
    if "+" in fn.name:  # A pair shows both terms' parameters besides alpha and beta.
      first, second = fn.name.split("+")
      for term in (first, second):
        for k in L.info(term).params:
          if k != "scale":
            self.assertIn(k, fn.params, f"{name}: {term}'s {k}")

  def test_a_pair_takes_its_terms_hyperparameters_at_call_time(self):
    z, y = _inputs()
    fn = L.get("nfl+rce", beta=2.0)
    want = 1.0 * L.nfl(z, y, gamma=1.0, detach_focal_factor=True) + 2.0 * L.rce(z, y, log_zero=-6.0)
    got = fn(z, y, gamma=1.0, detach_focal_factor=True, log_zero=-6.0)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    self.assertFalse(np.allclose(got, fn(z, y)))  # The overrides changed the value.
    np.testing.assert_allclose(fn(z, y, gamma=1.0), L.get("nfl+rce", beta=2.0, gamma=1.0)(z, y))
    # Inside jit, with a traced weight.
    jitted = jax.jit(lambda z, b: fn(z, y, beta=b, min_prob=1e-7))
    np.testing.assert_allclose(
      jitted(z, 0.5), L.nfl(z, y) + 0.5 * L.rce(z, y, min_prob=1e-7), rtol=1e-6, atol=1e-7
    )

  def test_unknown_keyword_names_the_loss_and_what_it_accepts(self):
    z, y = _inputs()
    with self.assertRaisesRegex(
      TypeError,
      r"aplx.losses 'nce\+rce': unknown keyword argument\(s\) \['log_zeros'\]; it accepts the "
      r"hyperparameters \['alpha', 'beta', 'log_zero', 'min_prob'\], axis, where\.",
    ):
      L.get("nce+rce")(z, y, log_zeros=-4.0)
    with self.assertRaisesRegex(TypeError, r"'nce': unknown keyword argument\(s\) \['key'\]"):
      L.get("nce")(z, y, key=jax.random.key(0))
    with self.assertRaisesRegex(TypeError, r"'nlnl': .* axis, where, key\."):
      L.get("nlnl")(z, y, gamma=1.0, key=jax.random.key(0))
    with self.assertRaisesRegex(ValueError, r"`scale` must be in \[0.0, inf\)"):
      L.get("nce")(z, y, scale=-1.0)


class IdentityTest(chex.TestCase):
  @parameterized.named_parameters(*[(n, n) for n in ALL_NAMES])
  def test_equal_hash_and_pickle(self, name):
    a, b = L.get(name), L.get(name)
    self.assertIsNot(a, b)
    self.assertEqual(a, b)
    self.assertEqual(hash(a), hash(b))
    back = pickle.loads(pickle.dumps(a))
    self.assertEqual(back, a)
    self.assertEqual(inspect.signature(back), inspect.signature(a))
    z, y = _inputs()
    np.testing.assert_array_equal(_call(back, z, y), _call(a, z, y))

  def test_different_arguments_are_not_equal(self):
    self.assertNotEqual(L.get("nce+rce"), L.get("nce+rce", beta=2.0))
    self.assertNotEqual(L.get("nce+rce"), L.get("nce+mae"))
    self.assertNotEqual(L.get("nce"), L.get("nce", scale=10.0))
    self.assertEqual(L.get("nce+rce", beta=2), L.get("NCE+RCE", alpha=1.0, beta=2.0))  # Same loss.
    self.assertEqual(len({L.get("gce"), L.get("gce", q=0.7), L.get("gce", q=0.5)}), 2)
    # Array-valued hyperparameters compare by content (values, dtype and shape).
    w = np.arange(1.0, 11.0, dtype=np.float32)
    self.assertEqual(L.get("nlnl", class_weight=w), L.get("nlnl", class_weight=jnp.asarray(w)))
    self.assertNotEqual(L.get("nlnl", class_weight=w), L.get("nlnl", class_weight=w + 1))
    self.assertNotEqual(L.get("nlnl", class_weight=w), L.get("nlnl", class_weight=w.astype(np.float64)))
    back = pickle.loads(pickle.dumps(L.get("nlnl", class_weight=jnp.asarray(w))))
    self.assertEqual(back, L.get("nlnl", class_weight=w))

  def test_a_static_jit_argument_does_not_recompile(self):
    z, y = _inputs()

    @jax.jit
    def _unused(z):  # (chex counts traces per function: a fresh one per test)
      return z

    @chex.assert_max_traces(n=2)
    def step(loss_fn, z, y):
      return jax.value_and_grad(lambda z: loss_fn(z, y).mean())(z)

    jitted = jax.jit(step, static_argnums=0)
    for _ in range(3):  # A new, equal Loss each time: one trace.
      jitted(L.get("nce+rce", alpha=1.0, beta=1.0), z, y)
    jitted(L.get("nce+rce", beta=2.0), z, y)  # A different loss: the second trace.
    with self.assertRaises(AssertionError):  # A third would be over the limit: the counter works.
      jitted(L.get("nce+mae"), z, y)

  def test_repr_rebuilds_the_loss(self):
    fn = L.get("NCEandRCE", alpha=1, beta=10)
    rebuilt = eval(repr(fn), {"aplx": __import__("aplx")})
    self.assertEqual(rebuilt, fn)


class OptaxConventionsTest(chex.TestCase):
  def test_axis_and_where_are_positional_as_in_optax(self):
    z = jax.random.normal(jax.random.key(0), (4, 10, 3))
    y = jnp.arange(12).reshape(4, 3) % 10
    mask = jnp.arange(12).reshape(4, 3) % 5 != 0
    for fn in (L.cross_entropy, L.nce, L.get("nce+rce"), L.get("ngce", q=0.3)):
      np.testing.assert_array_equal(fn(z, y, 1, mask), fn(z, y, axis=1, where=mask))
      self.assertEqual(float(jnp.sum(fn(z, y, 1, mask) * ~mask)), 0.0)

  def test_matches_optax_where_optax_defines_it(self):
    optax = self.skipTest("optax is not installed") if not _has("optax") else __import__("optax")
    z = jax.random.normal(jax.random.key(0), (2, 3, 4, 5)) * 3
    y = jnp.arange(6).reshape(2, 3) % 20
    mask = jnp.array([[True, False, True], [True, True, False]])
    want = optax.softmax_cross_entropy_with_integer_labels(z, y, (2, 3), mask)
    np.testing.assert_allclose(L.cross_entropy(z, y, (2, 3), mask), want, rtol=1e-6)
    y1 = jnp.arange(8).reshape(2, 4) % 3
    want = optax.softmax_cross_entropy_with_integer_labels(z[..., 0], y1, 1)
    np.testing.assert_allclose(L.cross_entropy(z[..., 0], y1, 1), want, rtol=1e-6)
    q = jax.nn.softmax(jax.random.normal(jax.random.key(1), z.shape), axis=1)
    want = optax.softmax_cross_entropy(z, q, axis=1)
    np.testing.assert_allclose(L.cross_entropy(z, q, axis=1), want, rtol=1e-6)

  def test_tuple_axis_against_a_float64_reference(self):
    """Classes on axes (3, 1), flattened in that order: a label is a flat index into z[b, :, h, :].T."""
    z = np.asarray(jax.random.normal(jax.random.key(0), (2, 3, 4, 5)) * 3)
    y = np.arange(8).reshape(2, 4) % 15
    flat = z.astype(np.float64).transpose(0, 2, 3, 1).reshape(2, 4, 15)  # index = j5 * 3 + j3
    m = flat.max(-1, keepdims=True)
    logp = flat - m - np.log(np.exp(flat - m).sum(-1, keepdims=True))
    want = -np.take_along_axis(logp, y[..., None], -1)[..., 0]
    np.testing.assert_allclose(L.cross_entropy(z, y, (3, 1)), want, rtol=1e-5)
    self.assertFalse(np.allclose(L.cross_entropy(z, y, (1, 3)), want, rtol=1e-3))  # Order matters.
    # axis=None: every axis is a class axis, one example.
    np.testing.assert_allclose(
      L.nce(z[0, :, 0, 0], jnp.int32(2), None), L.nce(z[0, :, 0, 0], jnp.int32(2)), rtol=1e-6
    )

  @parameterized.named_parameters(*[(n, n) for n in L.names()])
  def test_tuple_axis_equals_flattening_for_every_loss(self, name):
    fn = L.get(name)
    z = jax.random.normal(jax.random.key(0), (3, 2, 4, 5)) * 3  # classes: axes (1, 3), K = 10
    y = jnp.arange(12).reshape(3, 4) % 10
    flat = jnp.transpose(z, (0, 2, 1, 3)).reshape(3, 4, 10)
    np.testing.assert_allclose(_call(fn, z, y, (1, 3)), _call(fn, flat, y), rtol=1e-6, atol=1e-7)
    if fn.soft_labels:
      q = jax.nn.softmax(jax.random.normal(jax.random.key(1), z.shape), axis=(1, 3))
      q_flat = jnp.transpose(q, (0, 2, 1, 3)).reshape(3, 4, 10)
      np.testing.assert_allclose(_call(fn, z, q, (1, 3)), _call(fn, flat, q_flat), rtol=1e-6, atol=1e-7)

  def test_bfloat16_logits_give_float32(self):
    """The documented dtype decision (aplx.losses docstring): computed and returned in float32."""
    z, y = _inputs()
    for name in ("ce", "nce+rce", "dmi"):
      self.assertEqual(L.get(name)(z.astype(jnp.bfloat16), y).dtype, jnp.float32)
    self.assertIn("Dtype policy", L.__doc__)


def _has(module):
  try:
    __import__(module)
  except ImportError:
    return False
  return True


if __name__ == "__main__":
  absltest.main()
