"""Building blocks shared by the models: PyTorch-equivalent init, conv, dense, BatchNorm, 2x2 max-pool.

Everything here reproduces the PyTorch layers the authors used (HanxunH/Active-Passive-Losses,
`models.py`), so that a model built from these parts computes the same function, starts from the same
distribution, and updates its BatchNorm statistics the same way as theirs. They are the plain flax/XLA
layers; the faster kernels for XLA:CPU that the small CNNs can use instead are in `_cpu_kernels.py`.
"""

from __future__ import annotations

import math

from flax import nnx
import jax
import jax.numpy as jnp

# ------------------------------------------------------------------------------------------------
# Initialisers (PyTorch names -> flax variance_scaling; kernels are [kh, kw, in, out] or [in, out]).
# ------------------------------------------------------------------------------------------------

# nn.init.kaiming_uniform_(w, mode='fan_in', nonlinearity='relu'): U(-b, b), b = sqrt(6 / fan_in).
kaiming_uniform_relu = nnx.initializers.variance_scaling(2.0, "fan_in", "uniform")
# nn.init.xavier_uniform_(w) (gain 1): U(-b, b), b = sqrt(6 / (fan_in + fan_out)).
xavier_uniform = nnx.initializers.xavier_uniform()
# torchvision ResNet: nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu"); "normal" is
# the untruncated normal in jax.nn.initializers ("truncated_normal" is the truncated one).
kaiming_normal_fan_out = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
# PyTorch's default nn.Linear / nn.Conv2d weight init, kaiming_uniform_(a=sqrt(5)): b = 1/sqrt(fan_in).
torch_default_kernel = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias(fan_in: int) -> nnx.Initializer:
  """PyTorch's default bias init for nn.Linear / nn.Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


# ------------------------------------------------------------------------------------------------
# Layers
# ------------------------------------------------------------------------------------------------


def conv(in_ch, out_ch, kernel, *, stride=1, padding=None, use_bias, kernel_init, dtype, rngs):
  """nn.Conv2d equivalent: explicit symmetric padding (k-1)//2 like PyTorch, never 'SAME'.

  flax's 'SAME' pads stride-2 convolutions asymmetrically ((0, 1) on even inputs), PyTorch pads (1, 1);
  explicit padding keeps the two identical.
  """
  pad = (kernel - 1) // 2 if padding is None else padding
  bias_init = torch_default_bias(in_ch * kernel * kernel) if use_bias else nnx.initializers.zeros_init()
  return nnx.Conv(
    in_ch,
    out_ch,
    (kernel, kernel),
    strides=(stride, stride),
    padding=((pad, pad), (pad, pad)),
    use_bias=use_bias,
    kernel_init=kernel_init,
    bias_init=bias_init,
    dtype=dtype,
    param_dtype=jnp.float32,
    rngs=rngs,
  )


def dense(in_f, out_f, *, kernel_init, dtype, rngs):
  """nn.Linear equivalent (bias drawn like PyTorch's default)."""
  return nnx.Linear(
    in_f,
    out_f,
    kernel_init=kernel_init,
    bias_init=torch_default_bias(in_f),
    dtype=dtype,
    param_dtype=jnp.float32,
    rngs=rngs,
  )


class BatchNorm(nnx.BatchNorm):
  """nn.BatchNorm1d/2d with PyTorch's defaults and PyTorch's running-statistics update.

  * PyTorch's momentum 0.1 is flax's momentum 0.9: ``running = 0.9 * running + 0.1 * batch``.
  * epsilon 1e-5; scale 1, bias 0 at init.
  * Normalisation uses the biased batch variance; the running variance is updated with the unbiased
    one, ``var * n / (n - 1)`` (n = number of reduced elements), exactly as PyTorch does. (flax's
    BatchNorm stores the biased variance; the difference matters for small n, e.g. the Dense BN.)
  * Statistics are computed in float32 whatever the compute dtype. Under ``jax.jit`` with a sharded
    batch, the mean over the batch axis is global, so the statistics are global across devices.

  Train/eval switching is inherited: ``model.train()`` / ``model.eval()`` set ``use_running_average``.
  """

  def __init__(self, num_features: int, *, dtype=None, rngs: nnx.Rngs):
    super().__init__(
      num_features, momentum=0.9, epsilon=1e-5, dtype=dtype, param_dtype=jnp.float32, rngs=rngs
    )

  def __call__(self, x, use_running_average: bool | None = None, *, shift=None):
    """Normalises ``x`` (or ``x + shift`` when a per-channel ``shift`` is given, without adding it).

    ``shift`` lets a preceding layer's bias be folded in: BN(x + b) equals BN(x) with b added to the
    running mean, so the full-size addition is never materialised. In training mode the output does
    not depend on b at all (its gradient is exactly 0, as in exact arithmetic).
    """
    if use_running_average is None:
      use_running_average = self.use_running_average
    xf = x.astype(jnp.float32)
    shift = jnp.zeros(x.shape[-1:], jnp.float32) if shift is None else shift.astype(jnp.float32)
    bcast = lambda v: per_channel(v, x.ndim)
    if use_running_average:
      mean, var = self.mean[...] - shift, self.var[...]  # centre of x (not of x + shift)
    else:
      mean, var = batch_stats(xf)
      self.update_running(mean + shift, var, math.prod(x.shape[:-1]))
    mul = self.scale[...] * jax.lax.rsqrt(var + self.epsilon)
    y = (xf - bcast(mean)) * bcast(mul) + bcast(self.bias[...])
    return y.astype(self.dtype or x.dtype)

  def update_running(self, mean, var, n):
    """Updates the running statistics from a batch's per-channel ``mean`` and biased ``var`` over ``n``
    elements, as PyTorch does: running = 0.9 running + 0.1 batch, with the unbiased variance
    var n / (n - 1). (``__call__`` in training mode calls it; so does `_cpu_kernels.bn_relu`.)"""
    m = self.momentum
    self.mean[...] = jax.lax.stop_gradient(m * self.mean[...] + (1 - m) * mean)
    self.var[...] = jax.lax.stop_gradient(m * self.var[...] + (1 - m) * var * (n / max(n - 1, 1)))


def batch_stats(x):
  """Per-channel mean and biased variance over all axes but the last (two passes, as PyTorch)."""
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x, axis=axes)
  return mean, jnp.mean(jnp.square(x - per_channel(mean, x.ndim)), axis=axes)


def per_channel(v, ndim):
  """A per-channel vector [C] shaped to broadcast against an [..., C] array of rank ``ndim``."""
  return v.reshape((1,) * (ndim - 1) + (-1,))  # explicit: strict rank promotion


# ------------------------------------------------------------------------------------------------
# 2x2 / stride 2 max-pool
# ------------------------------------------------------------------------------------------------


def max_pool_2x2_reference(x: jax.Array) -> jax.Array:
  """flax's max_pool (lax.reduce_window); its gradient is select_and_scatter (slow on XLA:CPU).

  Ties: the whole gradient of a window goes to its first maximal element in row-major order, as in
  PyTorch's max_pool2d.
  """
  return nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2), padding="VALID")
