"""A port from the authors' PyTorch code is one line: every class of the official `loss.py`
(HanxunH/Active-Passive-Losses, commit 04bce53) against a float64 NumPy re-statement of it.

The re-statements below follow the official `forward` methods line by line (softmax, clamps, one-hot,
`.mean()` over the batch) and never call aplx. `.data` (no gradient) is written as a frozen copy of the
logits `z0`: the value uses it like `z`, the finite differences keep it fixed. Values are compared
directly, gradients against float64 central differences, on logits where the clamps act.
"""

import inspect
import math
import pickle

from absl.testing import absltest, parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

import aplx.losses as L

# ----------------------------------------------------------------------------------------------------
# The official loss.py, re-stated in float64 NumPy (z, z0: [N, K] logits, y: [N] labels) -> batch mean
# ----------------------------------------------------------------------------------------------------


def _log_softmax(z):
  m = z.max(1, keepdims=True)
  return z - m - np.log(np.exp(z - m).sum(1, keepdims=True))


def _softmax(z):
  return np.exp(_log_softmax(z))


def _one_hot(y, k):
  return np.eye(k)[y]


def t_ce(z, y, z0):  # torch.nn.CrossEntropyLoss()
  return -_log_softmax(z)[np.arange(len(y)), y].mean()


def t_rce(z, y, z0, scale=1.0):  # ReverseCrossEntropy
  pred = np.clip(_softmax(z), 1e-7, 1.0)
  label_one_hot = np.clip(_one_hot(y, z.shape[1]), 1e-4, 1.0)
  rce = -1 * np.sum(pred * np.log(label_one_hot), axis=1)
  return scale * rce.mean()


def t_sce(z, y, z0, alpha, beta):  # SCELoss
  return alpha * t_ce(z, y, z0) + beta * t_rce(z, y, z0)


def t_nrce(z, y, z0, scale=1.0):  # NormalizedReverseCrossEntropy
  normalizor = 1 / 4 * (z.shape[1] - 1)
  return scale * normalizor * t_rce(z, y, z0)


def t_nce(z, y, z0, scale=1.0):  # NormalizedCrossEntropy
  pred = _log_softmax(z)
  nce = -1 * np.sum(_one_hot(y, z.shape[1]) * pred, axis=1) / (-pred.sum(1))
  return scale * nce.mean()


def t_gce(z, y, z0, q=0.7):  # GeneralizedCrossEntropy
  pred = np.clip(_softmax(z), 1e-7, 1.0)
  gce = (1.0 - np.power(np.sum(_one_hot(y, z.shape[1]) * pred, axis=1), q)) / q
  return gce.mean()


def t_ngce(z, y, z0, scale=1.0, q=0.7):  # NormalizedGeneralizedCrossEntropy
  pred = np.clip(_softmax(z), 1e-7, 1.0)
  numerators = 1.0 - np.power(np.sum(_one_hot(y, z.shape[1]) * pred, axis=1), q)
  denominators = z.shape[1] - (pred**q).sum(1)
  return scale * (numerators / denominators).mean()


def t_mae(z, y, z0, scale=1.0):  # MeanAbsoluteError ("reduced MAE")
  mae = 1.0 - np.sum(_one_hot(y, z.shape[1]) * _softmax(z), axis=1)
  return scale * mae.mean()


def t_nmae(z, y, z0, scale=1.0):  # NormalizedMeanAbsoluteError
  normalizor = 1 / (2 * (z.shape[1] - 1))
  return scale * normalizor * t_mae(z, y, z0)


def t_focal(z, y, z0, gamma=0.0):  # FocalLoss(alpha=None, size_average=True)
  logpt = _log_softmax(z)[np.arange(len(y)), y]
  pt = np.exp(_log_softmax(z0)[np.arange(len(y)), y])  # Variable(logpt.data.exp())
  return (-1 * (1 - pt) ** gamma * logpt).mean()


def t_nfl(z, y, z0, scale=1.0, gamma=0.0):  # NormalizedFocalLoss
  logpt_all = _log_softmax(z)
  normalizor = np.sum(-1 * (1 - np.exp(_log_softmax(z0))) ** gamma * logpt_all, axis=1)
  logpt = logpt_all[np.arange(len(y)), y]
  pt = np.exp(_log_softmax(z0)[np.arange(len(y)), y])
  loss = -1 * (1 - pt) ** gamma * logpt
  return (scale * loss / normalizor).mean()


def t_nlnl(z, y, z0, weight, labels_neg):  # NLNL, given the weights and the drawn negatives [N, ln_neg]
  n, ln_neg = labels_neg.shape
  s_neg = np.log(np.clip(1.0 - _softmax(z), 1e-5, 1.0))
  s_neg = s_neg * weight[y][:, None]
  rows = np.tile(s_neg, (ln_neg, 1))  # s_neg.repeat(ln_neg, 1)
  targets = labels_neg.T.reshape(-1)  # labels_neg.t().contiguous().view(-1)
  loss_neg = -rows[np.arange(n * ln_neg), targets].mean() * (n * ln_neg)  # NLLLoss() * count
  return loss_neg / n  # The positive term sees only ignored labels (all set to -100): nothing.


def t_dmi(z, y, z0):  # DMILoss
  mat = _one_hot(y, z.shape[1]).T @ _softmax(z)
  return -1.0 * np.log(np.abs(np.linalg.det(mat)) + 0.001)


def _pair(first, second):
  """The official pairs: first(scale=alpha) + second(scale=beta), each keyword passed to who takes it."""

  def ref(z, y, z0, alpha, beta, **kw):
    a = {k: v for k, v in kw.items() if k in inspect.signature(first).parameters}
    b = {k: v for k, v in kw.items() if k in inspect.signature(second).parameters}
    return first(z, y, z0, scale=alpha, **a) + second(z, y, z0, scale=beta, **b)

  return ref


def _gce_pair(second, use_beta):
  """GCEandMAE / GCEandRCE (GCE unweighted, second * beta) and GCEandNCE (both unweighted)."""

  def ref(z, y, z0, alpha, beta, q=0.7):
    del alpha  # Never used by the official classes.
    return t_gce(z, y, z0, q=q) + second(z, y, z0, scale=beta if use_beta else 1.0)

  return ref


# class name -> (re-statement, constructor arguments as a YAML would give them)
CLASSES = {
  "CrossEntropyLoss": (t_ce, {}),
  "SCELoss": (t_sce, {"alpha": 0.1, "beta": 1.0}),
  "ReverseCrossEntropy": (t_rce, {"scale": 1.0}),
  "NormalizedReverseCrossEntropy": (t_nrce, {"scale": 1.0}),
  "NormalizedCrossEntropy": (t_nce, {"scale": 10.0}),
  "GeneralizedCrossEntropy": (t_gce, {"q": 0.7}),
  "NormalizedGeneralizedCrossEntropy": (t_ngce, {"scale": 10.0, "q": 0.1}),
  "MeanAbsoluteError": (t_mae, {"scale": 1.0}),
  "NormalizedMeanAbsoluteError": (t_nmae, {"scale": 1.0}),
  "NCEandRCE": (_pair(t_nce, t_rce), {"alpha": 1.0, "beta": 1.0}),
  "NCEandMAE": (_pair(t_nce, t_mae), {"alpha": 1.0, "beta": 10.0}),
  "GCEandMAE": (_gce_pair(t_mae, True), {"alpha": 1.0, "beta": 2.0, "q": 0.5}),
  "GCEandRCE": (_gce_pair(t_rce, True), {"alpha": 1.0, "beta": 0.5, "q": 0.7}),
  "GCEandNCE": (_gce_pair(t_nce, False), {"alpha": 1.0, "beta": 1.0, "q": 0.7}),
  "NGCEandNCE": (_pair(t_ngce, t_nce), {"alpha": 1.0, "beta": 1.0, "q": 0.1}),
  "NGCEandMAE": (_pair(t_ngce, t_mae), {"alpha": 10.0, "beta": 1.0, "q": 0.7}),
  "NGCEandRCE": (_pair(t_ngce, t_rce), {"alpha": 1.0, "beta": 1.0, "q": 0.1}),
  "MAEandRCE": (_pair(t_mae, t_rce), {"alpha": 1.0, "beta": 1.0}),
  "FocalLoss": (t_focal, {"gamma": 0.5}),
  "NormalizedFocalLoss": (t_nfl, {"scale": 1.0, "gamma": 0.5}),
  "NFLandNCE": (_pair(t_nfl, t_nce), {"alpha": 1.0, "beta": 1.0, "gamma": 0.5}),
  "NFLandMAE": (_pair(t_nfl, t_mae), {"alpha": 1.0, "beta": 10.0, "gamma": 0.5}),
  "NFLandRCE": (_pair(t_nfl, t_rce), {"alpha": 10.0, "beta": 0.1, "gamma": 0.5}),
  "DMILoss": (t_dmi, {}),
  # NLNL: checked separately (its negatives are random draws).
}


def _inputs(k, n=24, seed=0, confident=False):
  """Random logits (scale 3) plus rows where the clamps act: confidently right and wrong (p ~ e^-30).

  confident: every row confidently right, so that RCE's clamp of p at 1e-7 (which adds ~1e-5 to a
  confident row) is most of the batch mean, not a 1e-6 relative change of it.
  """
  rng = np.random.default_rng(seed)
  z = rng.standard_normal((n, k)) * 3.0
  y = np.arange(n) % k
  if confident:
    z[np.arange(n), y] = 30.0
  z[0, y[0]] = 30.0  # p_y -> 1, the other p ~ 1e-13 < 1e-7: RCE's clamp acts.
  z[1, y[1]] = -30.0  # p_y ~ 1e-13: GCE's and NGCE's clamps act.
  return z.astype(np.float32), y.astype(np.int32)


def _fd_grad(ref, z, y, h=1e-5):
  """Central differences of the batch-mean re-statement w.r.t. z, with the detached copy z0 fixed."""
  z = z.astype(np.float64)
  g = np.zeros_like(z)
  for idx in np.ndindex(z.shape):
    zp, zm = z.copy(), z.copy()
    zp[idx] += h
    zm[idx] -= h
    g[idx] = (ref(zp, y, z) - ref(zm, y, z)) / (2 * h)
  return g


def _aplx_mean(fn, z, y, **kw):
  return jax.value_and_grad(lambda z: fn(z, y, **kw).mean())(jnp.asarray(z))


class AuthorsClassesTest(chex.TestCase):
  def test_every_class_of_the_official_loss_py_is_covered(self):
    self.assertEqual(set(CLASSES) | {"NLNL"}, set(L.authors_class_names()))

  @parameterized.named_parameters(*[(n, n) for n in CLASSES])
  def test_value_and_gradient_equal_the_official_class(self, name):
    ref, kwargs = CLASSES[name]
    fn = L.get(name, **kwargs)
    for k, confident in ((3, False), (10, False), (10, True), (100, False), (100, True)):
      if name == "DMILoss" and k == 100:
        continue  # 8 examples, 100 classes: det = 0 (checked in DmiTest).
      z, y = _inputs(k, n=24 if k <= 10 else 8, confident=confident)
      want = ref(z.astype(np.float64), y, z.astype(np.float64), **kwargs)
      got, g = _aplx_mean(fn, z, y)
      case = f"{name}, K={k}, confident={confident}"
      np.testing.assert_allclose(float(got), want, rtol=2e-5, atol=1e-7, err_msg=case)
      want_g = _fd_grad(lambda z, y, z0: ref(z, y, z0, **kwargs), z, y)
      np.testing.assert_allclose(np.asarray(g), want_g, rtol=1e-3, atol=2e-6, err_msg=f"{case} grad")

  def test_the_papers_formulas_differ_here(self):
    """Not vacuous: the paper's defaults (what `get('nce+rce')` computes) miss the official value."""
    z, y = _inputs(10)
    want = CLASSES["NCEandRCE"][0](z.astype(np.float64), y, z.astype(np.float64), alpha=1.0, beta=1.0)
    paper = float(L.get("nce+rce")(z, y).mean())
    self.assertGreater(abs(paper - want) / want, 0.3)

  def test_nlnl_given_the_same_draws(self):
    k, key = 10, jax.random.key(5)
    z, y = _inputs(k)
    train_targets = np.random.default_rng(1).integers(0, k, 500)
    train_targets[train_targets == 3] = 4  # An unbalanced set: the class weights differ from 1.
    counts = np.array([(train_targets == i).sum() for i in range(k)], np.float64)
    with np.errstate(divide="ignore"):
      official_weight = 1 / (counts / counts.max())
    w = L.nlnl_class_weight(train_targets, k)
    np.testing.assert_allclose(w, official_weight, rtol=1e-6)  # (inf for the missing class 3)
    train_targets[:3] = 3  # Give class 3 some examples, then recompute both.
    counts = np.array([(train_targets == i).sum() for i in range(k)], np.float64)
    official_weight = 1 / (counts / counts.max())
    w = L.nlnl_class_weight(train_targets, k)
    for ln_neg in (1, 3):
      fn = L.get("NLNL", ln_neg=ln_neg, class_weight=w)
      # aplx's draws: ybar = (y + U{1..K-1}) mod K from the key, as the official code draws them.
      shift = jax.random.randint(key, (len(y), ln_neg), 1, k, dtype=jnp.int32)
      labels_neg = (y[:, None] + np.asarray(shift)) % k
      ref = lambda z, y, z0: t_nlnl(z, y, z0, official_weight, labels_neg)
      got, g = _aplx_mean(fn, z, y, key=key)
      np.testing.assert_allclose(float(got), ref(z.astype(np.float64), y, None), rtol=2e-5)
      np.testing.assert_allclose(np.asarray(g), _fd_grad(ref, z, y), rtol=1e-3, atol=2e-6)
    self.assertEqual(L.get("NLNL").params["min_prob"], 1e-5)  # The official clamp, not 1e-7.

  def test_class_names_are_the_authors_fidelity_of_the_aplx_names(self):
    self.assertEqual(
      L.get("NCEandRCE", alpha=1, beta=1), L.get("nce+rce", alpha=1.0, beta=1.0, fidelity="authors")
    )
    self.assertNotEqual(L.get("NCEandRCE"), L.get("nce+rce"))
    self.assertEqual(L.get("NFLandRCE", gamma=0.5), L.get("nfl+rce", fidelity="authors"))
    self.assertEqual(L.get("FocalLoss").params["gamma"], 0.0)  # The official default; aplx's is 0.5.
    self.assertEqual(L.get("fl").params["gamma"], 0.5)
    self.assertEqual(
      L.fidelity_params("nfl+rce", "authors"),
      {"log_zero": L.AUTHORS_LOG_ZERO, "min_prob": 1e-7, "detach_focal_factor": True},
    )
    self.assertEqual(L.fidelity_params("nfl+rce", "paper"), {})
    self.assertEqual(L.info("NCEandMAE").params["halved"], True)
    self.assertEqual(L.info("nce+mae", fidelity="authors").params["halved"], True)
    self.assertEqual(L.info("nce+mae").params["halved"], False)
    # A value given to get wins over the fidelity's.
    self.assertEqual(L.get("NCEandRCE", log_zero=-4.0).params["log_zero"], -4.0)

  def test_ignored_arguments_warn_and_are_ignored(self):
    z, y = _inputs(10)
    with self.assertWarnsRegex(UserWarning, r"the authors' GCEandMAE ignores `alpha`"):
      fn = L.get("GCEandMAE", alpha=5.0, beta=2.0)
    self.assertEqual(fn, L.get("GCEandMAE", alpha=1.0, beta=2.0))
    np.testing.assert_allclose(fn(z, y), L.get("gce+mae", beta=2.0, fidelity="authors")(z, y))
    with self.assertWarnsRegex(UserWarning, r"GCEandNCE ignores `beta`"):
      L.get("GCEandNCE", beta=3.0)

  def test_arguments_aplx_does_not_take_say_what_to_do(self):
    cases = [
      ("NCEandRCE", {"num_classes": 10}, r"`num_classes` is not taken: aplx reads K from the logits"),
      ("FocalLoss", {"size_average": False}, r"reduce it yourself: .mean\(\) \(True\) or .sum\(\)"),
      ("FocalLoss", {"alpha": 0.25}, r"multiply the per-example loss by jnp.asarray\(alpha\)\[labels\]"),
      ("NLNL", {"train_loader": None}, r"class_weight=aplx.losses.nlnl_class_weight"),
    ]
    for name, kwargs, msg in cases:
      with self.assertRaisesRegex(TypeError, msg):
        L.get(name, **kwargs)
    with self.assertRaisesRegex(ValueError, r"'NCEandRCE' is a class of the authors' loss.py"):
      L.get("NCEandRCE", fidelity="paper")
    with self.assertRaisesRegex(ValueError, r"fidelity='code': use 'paper'"):
      L.get("nce+rce", fidelity="code")
    with self.assertRaisesRegex(ValueError, r"or a class name of the authors' loss.py: CrossEntropyLoss"):
      L.get("NCEandRCEE")

  def test_a_ported_loss_pickles_and_keeps_its_origin(self):
    fn = L.get("NCEandRCE", alpha=1, beta=10)
    back = pickle.loads(pickle.dumps(fn))
    self.assertEqual(back, fn)
    self.assertIn("the authors' NCEandRCE", back.__doc__)


# ----------------------------------------------------------------------------------------------------
# DMI beyond the official class: where, batch-level flags, float64 gradient
# ----------------------------------------------------------------------------------------------------


class DmiTest(chex.TestCase):
  def test_where_drops_rows_from_the_joint_matrix(self):
    z, y = _inputs(3, n=12)
    keep = np.arange(12) % 4 != 1
    y_bad = y.copy()
    y_bad[~keep] = 255  # ignore-index labels, excluded
    value, g = jax.value_and_grad(lambda z: L.dmi(z, y_bad, where=keep).sum() / keep.sum())(jnp.asarray(z))
    want = t_dmi(z[keep].astype(np.float64), y[keep], None)
    np.testing.assert_allclose(float(value), want, rtol=2e-5)
    self.assertTrue(bool(jnp.all(g[~keep] == 0.0)))
    out = L.dmi(z, y_bad, where=keep)
    self.assertTrue(bool(jnp.all(out[~keep] == 0.0)) and bool(jnp.all(out[keep] == out[0])))

  def test_float64_gradient_and_flags(self):
    enable_x64 = jax.enable_x64 if hasattr(jax, "enable_x64") else jax.experimental.enable_x64
    z, y = _inputs(4, n=16)
    with enable_x64(True):
      got, g = jax.value_and_grad(lambda z: L.dmi(z, y, eps=0.01).mean())(jnp.asarray(z, jnp.float64))
      self.assertEqual(got.dtype, jnp.float64)
    ref = lambda z, y, z0: -np.log(np.abs(np.linalg.det(_one_hot(y, 4).T @ _softmax(z))) + 0.01)
    np.testing.assert_allclose(float(got), ref(z.astype(np.float64), y, None), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(g), _fd_grad(ref, z, y, h=1e-6), rtol=1e-6, atol=1e-9)
    info = L.info("dmi")
    self.assertTrue(info.batch_level and L.get("dmi").batch_level)
    self.assertFalse(L.info("nce").batch_level)
    with self.assertRaisesRegex(ValueError, r"dmi is a batch-level loss"):
      L.get("nce+dmi")
    with self.assertRaisesRegex(ValueError, r"normalize: dmi is a batch-level loss"):
      L.normalize(L.dmi)
    with self.assertRaisesRegex(ValueError, r"apl: a batch-level loss"):
      L.apl(L.nce, L.dmi)
    with self.assertRaisesRegex(ValueError, r"dmi: `eps` must be in \(0.0, inf\)"):
      L.get("dmi", eps=0.0)

  def test_singular_batch_is_finite(self):
    """A batch missing a class: det = 0, the value is -log(eps) and the gradient finite (zero)."""
    z, y = _inputs(10, n=6)  # 6 examples, 10 classes: rank <= 6.
    value, g = jax.value_and_grad(lambda z: L.dmi(z, y).mean())(jnp.asarray(z))
    np.testing.assert_allclose(float(value), -math.log(1e-3), rtol=1e-6)
    self.assertTrue(bool(jnp.all(jnp.isfinite(g))))


if __name__ == "__main__":
  absltest.main()
