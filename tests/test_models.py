"""aplx.models: shapes, exact parameter counts, init, BatchNorm semantics, fast == reference kernels,
the trainer's split/merge pattern, and input validation."""

import math

import chex
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import aplx.models as M
from aplx.models import cpu_kernels

SHAPES = {
  "mnist_cnn": (28, 28, 1),
  "cifar10_cnn": (32, 32, 3),
  "resnet18": (32, 32, 3),
  "resnet34": (32, 32, 3),
  "resnet50": (32, 32, 3),
  "resnet50_imagenet": (224, 224, 3),
}


def n_params(model):
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def functional_forward(model, x):
  """Forward through split/merge so that it can run under jax.eval_shape / jit without mutation."""
  graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  return nnx.merge(graphdef, params, stats, copy=True)(x)


# ------------------------------------------------------------------------------------------------
# Parameter counts, computed by hand from the architectures (docs/models.md).
# ------------------------------------------------------------------------------------------------


def conv_p(cin, cout, k, bias):
  return k * k * cin * cout + (cout if bias else 0)


def bn_p(c):
  return 2 * c


def dense_p(i, o):
  return i * o + o


def toy_count(in_ch, widths, flat, hidden, k):
  total, ch = 0, in_ch
  for w in widths:
    total += conv_p(ch, w, 3, True) + bn_p(w)
    ch = w
  return total + dense_p(flat, hidden) + bn_p(hidden) + dense_p(hidden, k)


def resnet_count(block, stages, k, stem):
  total = conv_p(3, 64, 7 if stem == "imagenet" else 3, False) + bn_p(64)
  cin = 64
  for i, n in enumerate(stages):
    planes = 64 * 2**i
    for j in range(n):
      stride = 2 if i > 0 and j == 0 else 1
      if block == "basic":
        out = planes
        total += (
          conv_p(cin, planes, 3, False) + bn_p(planes) + conv_p(planes, planes, 3, False) + bn_p(planes)
        )
      else:
        out = 4 * planes
        total += (
          conv_p(cin, planes, 1, False)
          + bn_p(planes)
          + conv_p(planes, planes, 3, False)
          + bn_p(planes)
          + conv_p(planes, out, 1, False)
          + bn_p(out)
        )
      if stride != 1 or cin != out:
        total += conv_p(cin, out, 1, False) + bn_p(out)
      cin = out
  return total + dense_p(cin, k)


EXPECTED = [
  ("mnist_cnn", 10, toy_count(1, (32, 64), 64 * 7 * 7, 128, 10)),
  ("cifar10_cnn", 10, toy_count(3, (64, 64, 128, 128, 196, 196), 196 * 4 * 4, 256, 10)),
  ("resnet18", 10, resnet_count("basic", (2, 2, 2, 2), 10, "cifar")),
  ("resnet34", 10, resnet_count("basic", (3, 4, 6, 3), 10, "cifar")),
  ("resnet50", 10, resnet_count("bottleneck", (3, 4, 6, 3), 10, "cifar")),
  ("resnet50", 100, resnet_count("bottleneck", (3, 4, 6, 3), 100, "cifar")),
  ("resnet50_imagenet", 50, resnet_count("bottleneck", (3, 4, 6, 3), 50, "imagenet")),
  ("resnet50_imagenet", 1000, resnet_count("bottleneck", (3, 4, 6, 3), 1000, "imagenet")),
]


def test_hand_counts_match_pytorch_reference_numbers():
  # PyTorch's sum(p.numel()) for the authors' models / torchvision (checked with torch 2.13 here).
  assert [c for *_, c in EXPECTED] == [
    422_090,
    1_639_794,
    11_173_962,
    21_282_122,
    23_520_842,
    23_705_252,
    23_610_482,
    25_557_032,
  ]


@pytest.mark.parametrize("name,k,expected", EXPECTED)
def test_parameter_counts(name, k, expected):
  model = M.get(name, num_classes=k, rngs=nnx.Rngs(0))
  assert n_params(model) == expected
  # Only parameters and BatchNorm statistics: no other mutable state for the trainer to carry.
  _, _, _, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
  assert jax.tree.leaves(rest) == []
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(model)))


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_output_shapes(name):
  model = M.get(name, num_classes=7, rngs=nnx.Rngs(0))
  x = jax.ShapeDtypeStruct((3, *SHAPES[name]), jnp.float32)
  for mode in ("train", "eval"):
    getattr(model, mode)()
    out = jax.eval_shape(functional_forward, model, x)
    assert out.shape == (3, 7) and out.dtype == jnp.float32


@pytest.mark.parametrize(
  "name", ["mnist_cnn", "cifar10_cnn", pytest.param("resnet18", marks=pytest.mark.slow)]
)
def test_forward_runs_and_is_finite(name):
  model = M.get(name, num_classes=10, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (4, *SHAPES[name]))
  y = model(x)
  assert y.shape == (4, 10)
  assert bool(jnp.all(jnp.isfinite(y)))


def test_registry():
  assert M.names() == sorted(
    ["mnist_cnn", "cifar10_cnn", "resnet18", "resnet34", "resnet50", "resnet50_imagenet"]
  )
  with pytest.raises(ValueError, match="unknown model 'vgg'.*mnist_cnn.*resnet50_imagenet"):
    M.get("vgg", num_classes=10, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="num_classes"):
    M.get("mnist_cnn", num_classes=0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="kernels must be one of 'auto', 'fast', 'reference'; got 'turbo'"):
    M.get("mnist_cnn", num_classes=10, rngs=nnx.Rngs(0), kernels="turbo")


# ------------------------------------------------------------------------------------------------
# Initialisation (the authors' _reset_prams; torchvision for the ImageNet ResNet).
# ------------------------------------------------------------------------------------------------


def test_init_distributions():
  m = M.get("mnist_cnn", num_classes=10, rngs=nnx.Rngs(0))
  conv2 = m.blocks[1][0].conv
  w = np.asarray(conv2.kernel[...])
  bound = math.sqrt(6 / (3 * 3 * 32))  # kaiming_uniform_(fan_in, relu)
  assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
  assert abs(w.std() - bound / math.sqrt(3)) < 0.02 * bound
  b = np.asarray(conv2.bias[...])  # PyTorch default bias: U(+-1/sqrt(fan_in))
  assert np.abs(b).max() <= 1 / math.sqrt(288) and np.abs(b).max() > 0
  fc1 = np.asarray(m.fc1.kernel[...])
  bound = math.sqrt(6 / (3136 + 128))  # xavier_uniform_
  assert np.abs(fc1).max() <= bound and np.abs(fc1).max() > 0.99 * bound
  assert np.all(np.asarray(m.bn1.scale[...]) == 1) and np.all(np.asarray(m.bn1.bias[...]) == 0)
  assert np.all(np.asarray(m.bn1.mean[...]) == 0) and np.all(np.asarray(m.bn1.var[...]) == 1)

  r = M.get("resnet50_imagenet", num_classes=50, rngs=nnx.Rngs(0))
  stem = np.asarray(r.conv1.kernel[...])  # kaiming_normal_(fan_out, relu), untruncated
  assert abs(stem.std() - math.sqrt(2 / (7 * 7 * 64))) < 0.03 * math.sqrt(2 / (7 * 7 * 64))
  assert np.abs(stem).max() > 3 * stem.std()  # not truncated at 2 sigma
  fc = np.asarray(r.fc.kernel[...])  # PyTorch default Linear: U(+-1/sqrt(fan_in))
  assert np.abs(fc).max() <= 1 / math.sqrt(2048) and np.abs(fc).max() > 0.99 / math.sqrt(2048)


def test_same_seed_same_params():
  a = nnx.state(M.get("mnist_cnn", num_classes=10, rngs=nnx.Rngs(3)), nnx.Param)
  b = nnx.state(M.get("mnist_cnn", num_classes=10, rngs=nnx.Rngs(3)), nnx.Param)
  chex.assert_trees_all_equal(a, b)


# ------------------------------------------------------------------------------------------------
# BatchNorm: PyTorch semantics, train vs eval.
# ------------------------------------------------------------------------------------------------


def test_batchnorm_matches_pytorch_update_rule():
  bn = M.BatchNorm(3, rngs=nnx.Rngs(0))
  x = np.random.default_rng(0).normal(2.0, 3.0, (5, 4, 4, 3)).astype(np.float32)
  y = np.asarray(bn(jnp.asarray(x)))
  xd = x.astype(np.float64).reshape(-1, 3)
  mean, var = xd.mean(0), xd.var(0)
  np.testing.assert_allclose(y.reshape(-1, 3), (xd - mean) / np.sqrt(var + 1e-5), atol=1e-5)
  n = xd.shape[0]
  np.testing.assert_allclose(bn.mean[...], 0.1 * mean, rtol=1e-5)
  np.testing.assert_allclose(bn.var[...], 0.9 + 0.1 * var * n / (n - 1), rtol=1e-5)  # unbiased


def test_batchnorm_shift_folding():
  bn_a, bn_b = M.BatchNorm(3, rngs=nnx.Rngs(0)), M.BatchNorm(3, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (6, 2, 2, 3))
  shift = jnp.array([0.5, -1.0, 2.0])
  np.testing.assert_allclose(bn_a(x + shift[None, None, None]), bn_b(x, shift=shift), atol=1e-5)
  chex.assert_trees_all_close(nnx.state(bn_a, nnx.BatchStat), nnx.state(bn_b, nnx.BatchStat), atol=1e-6)
  bn_a.eval(), bn_b.eval()
  np.testing.assert_allclose(bn_a(x + shift[None, None, None]), bn_b(x, shift=shift), atol=1e-5)


@pytest.mark.parametrize("kernels", ["fast", "reference"])
def test_train_and_eval_modes(kernels):
  model = M.get("mnist_cnn", num_classes=10, rngs=nnx.Rngs(0), kernels=kernels)
  x = jax.random.normal(jax.random.key(0), (8, 28, 28, 1))
  stats0 = nnx.state(model, nnx.BatchStat)
  model.eval()
  y_eval = model(x)
  chex.assert_trees_all_equal(nnx.state(model, nnx.BatchStat), stats0)  # eval never updates
  np.testing.assert_allclose(model(x[:1]), y_eval[:1], rtol=1e-5, atol=1e-5)  # per-example in eval
  model.train()
  y_train = model(x)
  assert not np.allclose(y_train, y_eval)
  assert not np.allclose(nnx.state(model, nnx.BatchStat)["bn1"]["mean"][...], 0)
  # In training mode each example's output depends on the rest of the batch.
  assert not np.allclose(model(x[:2])[:1], model(x)[:1], atol=1e-4)


# ------------------------------------------------------------------------------------------------
# Kernels chosen by backend: "auto" is the CPU kernels on the CPU backend, the plain layers elsewhere.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist_cnn", "cifar10_cnn"])
@pytest.mark.parametrize(
  "backend,kernels,fast",
  [
    ("cpu", "auto", True),
    ("gpu", "auto", False),
    ("tpu", "auto", False),
    ("gpu", "fast", True),
    ("cpu", "reference", False),
  ],
)
def test_kernels_by_backend(monkeypatch, name, backend, kernels, fast):
  # "auto" (the default) takes the CPU kernels on the CPU backend only; "fast"/"reference" are kept as
  # asked. Which path runs: each block's flag, and whether cpu_kernels.conv_bn_relu is called.
  monkeypatch.setattr(cpu_kernels, "backend", lambda: backend)
  calls = []
  conv_bn_relu = cpu_kernels.conv_bn_relu
  monkeypatch.setattr(cpu_kernels, "conv_bn_relu", lambda *a, **k: calls.append(1) or conv_bn_relu(*a, **k))
  options = {} if kernels == "auto" else {"kernels": kernels}
  model = M.get(name, num_classes=10, rngs=nnx.Rngs(0), **options)
  assert model.kernels == ("fast" if fast else "reference")
  blocks = [layer for block in model.blocks for layer in block]
  assert all(layer.cpu_kernels == fast for layer in blocks)
  jax.eval_shape(lambda x: functional_forward(model, x), jnp.zeros((2, *SHAPES[name])))
  assert len(calls) == (len(blocks) if fast else 0)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU backend's default")
def test_auto_is_fast_on_cpu():
  # The default on the CPU backend: the same model, bit for bit, as kernels="fast".
  x = jax.random.normal(jax.random.key(0), (4, 28, 28, 1))
  auto, fast = (
    M.get("mnist_cnn", num_classes=10, rngs=nnx.Rngs(0), **kw) for kw in ({}, {"kernels": "fast"})
  )
  assert auto.kernels == "fast"
  np.testing.assert_array_equal(auto(x), fast(x))
  chex.assert_trees_all_equal(nnx.state(auto), nnx.state(fast))


# ------------------------------------------------------------------------------------------------
# Fast kernels == reference kernels.
# ------------------------------------------------------------------------------------------------


def test_max_pool_fast_equals_reference_bitwise_with_ties():
  rng = np.random.default_rng(0)
  for shape in [(2, 8, 8, 3), (2, 7, 9, 2)]:  # odd sizes: VALID pooling drops the last row/col
    x = jnp.asarray(rng.integers(0, 3, shape).astype(np.float32))  # many ties, incl. at the max
    g = jnp.asarray(rng.normal(size=(shape[0], shape[1] // 2, shape[2] // 2, shape[3])).astype(np.float32))
    y_ref, vjp_ref = jax.vjp(M.max_pool_2x2_reference, x)
    y_fast, vjp_fast = jax.vjp(M.max_pool_2x2_fast, x)
    np.testing.assert_array_equal(y_fast, y_ref)
    np.testing.assert_array_equal(vjp_fast(g)[0], vjp_ref(g)[0])
  # The first maximum in row-major window order takes the whole gradient (as in PyTorch).
  x = jnp.ones((1, 2, 2, 1))
  np.testing.assert_array_equal(
    jax.grad(lambda x: M.max_pool_2x2_fast(x).sum())(x)[0, :, :, 0], [[1, 0], [0, 0]]
  )


def _bn_relu_composed(x, scale, bias, eps, pool):
  """The three layers as written, differentiated by JAX: BatchNorm (training mode), ReLU, max-pool."""
  axes = tuple(range(x.ndim - 1))
  scale, bias = (jnp.expand_dims(v, axes) for v in (scale, bias))
  mean = x.mean(axis=axes, keepdims=True)
  var = jnp.square(x - mean).mean(axis=axes, keepdims=True)
  y = jax.nn.relu((x - mean) * (scale * jax.lax.rsqrt(var + eps)) + bias)
  return (M.max_pool_2x2_reference(y) if pool else y), mean.reshape(-1), var.reshape(-1)


@pytest.mark.parametrize(
  "shape,pool", [((6, 7, 9, 3), True), ((6, 8, 8, 3), True), ((6, 4, 4, 3), False), ((10, 5), False)]
)
def test_bn_relu_train_equals_autodiff_float64(shape, pool):
  # Values and the VJP of all three outputs (the batch mean and variance feed the running averages)
  # against JAX's autodiff of the composed layers, in float64; odd sizes drop the last row/column,
  # and half the activations are ReLU'd to 0, so pool windows tie at 0 and at the maximum.
  enable_x64 = jax.enable_x64 if hasattr(jax, "enable_x64") else jax.experimental.enable_x64
  with enable_x64(True):
    rng = np.random.default_rng(0)
    x = rng.integers(-2, 3, shape).astype(np.float64) + (rng.random(shape) < 0.5) * rng.normal(size=shape)
    scale, bias = rng.normal(size=(2, shape[-1]))
    scale[0] = -1.0  # A negative scale turns the window's maximum into the minimum of x.
    fast = jax.vjp(lambda *a: M.bn_relu_train(*a, 1e-5, pool), x, scale, bias)
    ref = jax.vjp(lambda *a: _bn_relu_composed(*a, 1e-5, pool), x, scale, bias)
    for a, b in zip(fast[0], ref[0]):
      np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    assert float((fast[0][0] == 0).mean()) > 0.1  # The ReLU is active.
    cts = tuple(rng.normal(size=o.shape) for o in ref[0])
    for a, b in zip(fast[1](cts), ref[1](cts)):
      np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_bn_relu_train_dtypes():
  # bfloat16 activations: out keeps x's dtype and equals the module path; cotangents match the primals.
  x = jax.random.normal(jax.random.key(0), (4, 6, 6, 5)).astype(jnp.bfloat16)
  scale, bias = jnp.ones(5), jnp.zeros(5)
  (out, mean, var), vjp = jax.vjp(lambda *a: M.bn_relu_train(*a, 1e-5, True), x, scale, bias)
  assert (out.dtype, mean.dtype, var.dtype) == (jnp.bfloat16, jnp.float32, jnp.float32)
  gx, gs, gb = vjp((jnp.ones_like(out), jnp.zeros_like(mean), jnp.zeros_like(var)))
  assert (gx.dtype, gs.dtype, gb.dtype) == (jnp.bfloat16, jnp.float32, jnp.float32)
  bn = M.BatchNorm(5, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  np.testing.assert_array_equal(out, M.max_pool_2x2_fast(jax.nn.relu(bn(x))))
  # bn_relu(bn, x) is relu(bn(x)) (+ pool) for any input dtype: bf16 in a bf16 layer (the fused
  # kernel), float32 into a bf16 layer (statistics of the float32 input, as __call__ computes them).
  for xd in (x, x.astype(jnp.float32) + 1e-3):
    bn_a, bn_b = (M.BatchNorm(5, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)) for _ in range(2))
    got = cpu_kernels.bn_relu(bn_a, xd, pool=True)
    np.testing.assert_array_equal(got, M.max_pool_2x2_fast(jax.nn.relu(bn_b(xd))))
    chex.assert_trees_all_close(nnx.state(bn_a, nnx.BatchStat), nnx.state(bn_b, nnx.BatchStat), atol=1e-6)


def mnist_like_batch(n=16):
  """Digit-like images: constant background (ties everywhere after conv+BN+ReLU) plus strokes."""
  rng = np.random.default_rng(0)
  img = np.zeros((n, 28, 28, 1), np.float32)
  for i in range(n):
    r, c = rng.integers(4, 18, 2)
    img[i, r : r + 8, c : c + 3] = 1.0
    img[i, r + 3, c : c + 8] = rng.uniform(0.5, 1.0)
  return jnp.asarray((img - 0.1307) / 0.3081)


@pytest.mark.parametrize(
  "name,data", [("mnist_cnn", "normal"), ("mnist_cnn", "ties"), ("cifar10_cnn", "normal")]
)
def test_fast_kernels_equal_reference(name, data):
  x = jax.random.normal(jax.random.key(1), (16, *SHAPES[name])) if data == "normal" else mnist_like_batch()
  y = jnp.arange(16) % 10
  out = {}
  for kernels in ("fast", "reference"):
    model = M.get(name, num_classes=10, rngs=nnx.Rngs(0), kernels=kernels)
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)

    def loss_fn(params, x):
      m = nnx.merge(graphdef, params, stats, copy=True)
      logits = m(x)
      loss = -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1).mean()
      return loss, (logits, nnx.state(m, nnx.BatchStat))

    (loss, (logits, new_stats)), (gp, gx) = jax.jit(
      jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)
    )(params, x)
    m = nnx.merge(graphdef, params, new_stats)
    m.eval()
    out[kernels] = dict(logits=logits, stats=new_stats, gp=gp, gx=gx, eval=m(x))
  f, r = out["fast"], out["reference"]
  # Same function; only float32 summation order differs (im2col conv, conv bias folded into BN).
  chex.assert_trees_all_close(f["logits"], r["logits"], atol=2e-5, rtol=2e-5)
  chex.assert_trees_all_close(f["eval"], r["eval"], atol=2e-5, rtol=2e-5)
  chex.assert_trees_all_close(f["stats"], r["stats"], atol=2e-5, rtol=2e-5)
  chex.assert_trees_all_close(f["gx"], r["gx"], atol=1e-6, rtol=1e-4)
  # Gradients agree to float32 rounding relative to each tensor's scale. A conv bias followed by
  # BatchNorm cancels out of the training-mode output: its gradient is exactly 0 in "fast" (bias
  # folded into the BN mean) and rounding noise in "reference".
  gmax = max(float(jnp.abs(a).max()) for a in jax.tree.leaves(r["gp"]))

  def check(path, a, b):
    keys = [getattr(k, "key", getattr(k, "idx", None)) for k in path]
    keys = [k for k in keys if k is not None]
    if "conv" in keys and keys[-1] == "bias":
      assert float(jnp.abs(a).max()) == 0.0 and float(jnp.abs(b).max()) < 1e-5 * gmax, keys
    else:
      np.testing.assert_allclose(
        a, b, atol=1e-4 * float(jnp.abs(b).max()) + 1e-7, rtol=1e-4, err_msg=str(keys)
      )

  jax.tree_util.tree_map_with_path(check, f["gp"], r["gp"])


# ------------------------------------------------------------------------------------------------
# dtype and input validation.
# ------------------------------------------------------------------------------------------------


def test_bfloat16_compute_keeps_float32_params():
  model = M.get("mnist_cnn", num_classes=10, rngs=nnx.Rngs(0), dtype=jnp.bfloat16)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(model)))
  ref = M.get("mnist_cnn", num_classes=10, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (8, 28, 28, 1))
  y = model(x)
  assert y.dtype == jnp.float32
  np.testing.assert_allclose(y, ref(x), atol=0.15, rtol=0.1)


@pytest.mark.parametrize("name", ["mnist_cnn", "resnet18"])
def test_bad_inputs(name):
  model = M.get(name, num_classes=10, rngs=nnx.Rngs(0))
  h, w, c = SHAPES[name]
  with pytest.raises(ValueError, match=r"\[batch, height, width, channels\] \(NHWC\)"):
    model(jnp.zeros((h, w, c)))
  with pytest.raises(ValueError, match=f"expects {c} input channel"):
    model(jnp.zeros((2, c + 1, h, w)))
  with pytest.raises(ValueError, match="floating-point"):
    model(jnp.zeros((2, h, w, c), jnp.uint8))
  if name == "mnist_cnn":
    with pytest.raises(ValueError, match="expects 28x28 images"):
      model(jnp.zeros((2, 32, 32, 1)))


# ------------------------------------------------------------------------------------------------
# Cross-check against the authors' PyTorch model (only where torch is installed).
# ------------------------------------------------------------------------------------------------


def test_mnist_cnn_matches_pytorch_toymodel():
  torch = pytest.importorskip("torch")
  import importlib.util
  import pathlib

  path = pathlib.Path(__file__).parents[1] / "benchmarks" / "torch_mnist.py"
  spec = importlib.util.spec_from_file_location("torch_mnist", path)
  tm = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tm)
  tmodel = tm.ToyModelMNIST().train()
  assert sum(p.numel() for p in tmodel.parameters()) == n_params(
    M.get("mnist_cnn", num_classes=10, rngs=nnx.Rngs(0))
  )
  model = M.get("mnist_cnn", num_classes=10, rngs=nnx.Rngs(0))
  # Port our weights into the torch model (HWIO -> OIHW, [in, out] -> [out, in]).
  t = lambda a: torch.from_numpy(np.array(a))
  convs = [model.blocks[0][0], model.blocks[1][0]]
  with torch.no_grad():
    seq = tmodel.features
    for idx, ours in [(0, convs[0]), (2, convs[1])]:
      seq[idx][0].weight.copy_(t(ours.conv.kernel[...]).permute(3, 2, 0, 1))
      seq[idx][0].bias.copy_(t(ours.conv.bias[...]))
    tmodel.fc1[0].weight.copy_(t(model.fc1.kernel[...]).T)
    tmodel.fc1[0].bias.copy_(t(model.fc1.bias[...]))
    tmodel.fc2.weight.copy_(t(model.fc2.kernel[...]).T)
    tmodel.fc2.bias.copy_(t(model.fc2.bias[...]))
  x = np.array(mnist_like_batch(8))
  ours = np.asarray(model(jnp.asarray(x)))
  theirs = tmodel(torch.from_numpy(x).permute(0, 3, 1, 2)).detach().numpy()
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(np.asarray(model.bn1.var[...]), tmodel.fc1[1].running_var.numpy(), rtol=1e-4)
  model.eval()
  tmodel.eval()
  np.testing.assert_allclose(
    np.asarray(model(jnp.asarray(x))),
    tmodel(torch.from_numpy(x).permute(0, 3, 1, 2)).detach().numpy(),
    atol=1e-4,
    rtol=1e-4,
  )
