"""Kernels that beat XLA:CPU on the paper's small CNNs: `kernels="fast"`, and `"auto"` on the CPU backend.

Each computes the function of the plain layers it replaces (`_layers.py`, flax), with the same gradients
up to float32 summation order (the max-pool's are bit-identical). They exist because XLA:CPU runs the
plain layers' gradients slowly; on GPU and TPU, XLA fuses BatchNorm, ReLU and pooling itself and the
vendor libraries take stock convolution gradients, so there the models use the plain layers
(`_cnn.py`, `kernels="auto"`). docs/models.md lists them and what they gained.

  conv_bn_relu(conv, bn, x, pool=)    a whole ConvBNReLU block: one of the convolutions below, then
                                      bn_relu with the conv bias folded into BatchNorm's mean
  bn_relu(bn, x, shift=, pool=)       relu(bn(x + shift)) (+ 2x2 max-pool), updating bn's statistics
  bn_relu_train                       its training-mode kernel, with a hand-written VJP
  max_pool_2x2_fast                   2x2 max-pool by a reshape, its gradient without select_and_scatter
  conv3x3_im2col, conv3x3             3x3 convolutions: a matmul over patches (few input channels);
                                      with NHWC x HWIO gradient convolutions (the others)
"""

from __future__ import annotations

import functools
import math

from flax import nnx
import jax
import jax.numpy as jnp

from aplx.models import _layers
from aplx.models._layers import batch_stats, per_channel


def backend() -> str:
  """The platform the models are built for, `jax.default_backend()`: "cpu", "gpu", "tpu", ...

  `kernels="auto"` uses the kernels of this module where this is "cpu". (A function, so that tests can
  pretend to run on an accelerator.)
  """
  return jax.default_backend()


# ------------------------------------------------------------------------------------------------
# The ConvBNReLU block: conv3x3 (bias folded into BatchNorm) + BatchNorm + ReLU (+ 2x2 max-pool).
# ------------------------------------------------------------------------------------------------


def conv_bn_relu(conv: nnx.Conv, bn: _layers.BatchNorm, x: jax.Array, *, pool: bool) -> jax.Array:
  """``relu(bn(conv(x)))``, then a 2x2 max-pool if ``pool``, for a 3x3 / stride 1 / padding 1 ``conv``.

  Few input channels (<= 4): the convolution as one matmul over 3x3 patches (`conv3x3_im2col`), else
  `conv3x3`. The conv bias is folded into BatchNorm's mean instead of added to the full activation
  (same function); BatchNorm, ReLU and max-pool are `bn_relu`.
  """
  dtype = conv.dtype or x.dtype
  x = x.astype(dtype)
  kernel = conv.kernel[...].astype(dtype)
  if conv.in_features <= 4:
    y = conv3x3_im2col(x, kernel)
  else:
    y = conv3x3(x, kernel)
  return bn_relu(bn, y, shift=conv.bias[...], pool=pool)


def bn_relu(bn: _layers.BatchNorm, x: jax.Array, *, shift=None, pool: bool = False) -> jax.Array:
  """``relu(bn(x, shift=shift))``, then `max_pool_2x2_fast` if ``pool``: same values and gradients.

  In training mode this is one kernel with a hand-written VJP (`bn_relu_train`), whose backward pass
  reads the full-size activation twice where autodiff of the three layers reads it a dozen times,
  when ``x`` already has the compute dtype (as in the models) and is at most 32-bit; otherwise (a
  cast before the statistics, float64 computed in float32) it is the three layers as written. Updates
  ``bn``'s running statistics as ``bn(x, shift=shift)`` does.
  """
  fused = x.dtype == (bn.dtype or x.dtype) and jnp.dtype(x.dtype).itemsize <= 4
  if bn.use_running_average or not fused:
    y = jax.nn.relu(bn(x, shift=shift))
    return max_pool_2x2_fast(y) if pool else y
  y, mean, var = bn_relu_train(x, bn.scale[...], bn.bias[...], bn.epsilon, pool)
  shift = 0.0 if shift is None else shift.astype(jnp.float32)
  bn.update_running(mean + shift, var, math.prod(x.shape[:-1]))
  return y


# ------------------------------------------------------------------------------------------------
# 2x2 / stride 2 max-pool by a reshape, with a custom VJP.
# ------------------------------------------------------------------------------------------------
# Routes the whole gradient of a window to the FIRST maximal element in row-major window order
# ((0,0), (0,1), (1,0), (1,1)), which is what XLA's select_and_scatter (the gradient of
# lax.reduce_window max, `_layers.max_pool_2x2_reference`) and PyTorch's max_pool2d do. Ties are
# common in practice (flat image background gives identical activations), so this kernel must break
# them the same way.


def _split_2x2(x):
  b, h, w, c = x.shape
  x = x[:, : h - h % 2, : w - w % 2, :]  # VALID pooling drops an odd last row/column
  x = x.reshape(b, h // 2, 2, w // 2, 2, c)
  return x[:, :, 0, :, 0], x[:, :, 0, :, 1], x[:, :, 1, :, 0], x[:, :, 1, :, 1]


@jax.custom_vjp
def max_pool_2x2_fast(x: jax.Array) -> jax.Array:
  """Same values and gradients as `max_pool_2x2_reference`, computed with a reshape and elementwise ops.

  Its gradient is a few fused elementwise selects instead of select_and_scatter.
  """
  a, b, c, d = _split_2x2(x)
  return jnp.maximum(jnp.maximum(a, b), jnp.maximum(c, d))


def _max_pool_fwd(x):
  # The winner of each window is decided once, here, and saved: comparing x with y again in the
  # backward pass is fragile, because XLA may recompute x there with a different rounding (it did
  # under data-parallel sharding, sending ReLU-tie gradients to the wrong element).
  a, b, c, d = _split_2x2(x)
  y = jnp.maximum(jnp.maximum(a, b), jnp.maximum(c, d))
  winner = jnp.where(a == y, 0, jnp.where(b == y, 1, jnp.where(c == y, 2, 3))).astype(jnp.int8)
  return y, (winner, x.shape)


def _max_pool_bwd(res, g):
  winner, shape = res
  zero = jnp.zeros_like(g)
  ga, gb, gc, gd = (jnp.where(winner == i, g, zero) for i in range(4))  # First maximum wins.
  top = jnp.stack([ga, gb], axis=3)  # [B, H/2, W/2, 2, C]
  bottom = jnp.stack([gc, gd], axis=3)
  gx = jnp.stack([top, bottom], axis=2)  # [B, H/2, 2, W/2, 2, C]
  bsz, h2, _, w2, _, ch = gx.shape
  gx = gx.reshape(bsz, 2 * h2, 2 * w2, ch)
  pad_h, pad_w = shape[1] - 2 * h2, shape[2] - 2 * w2
  if pad_h or pad_w:
    gx = jnp.pad(gx, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
  return (gx,)


max_pool_2x2_fast.defvjp(_max_pool_fwd, _max_pool_bwd)


# ------------------------------------------------------------------------------------------------
# Training-mode BatchNorm + ReLU (+ 2x2 max-pool) with a hand-written VJP.
# ------------------------------------------------------------------------------------------------
# Autodiff of BatchNorm -> ReLU -> max-pool makes about a dozen elementwise and reduction passes over
# the full-size activation in the backward pass (on the MNIST CNN these passes, not the convolutions,
# were most of the step on XLA:CPU). Written out, the backward pass is two passes: one reads x, the
# pool winners and the incoming gradient for the two per-channel sums, one writes dx. With
# xhat = (x - mean) * inv, inv = rsqrt(var + eps) and gy the gradient at the BatchNorm output:
#   dbias = sum gy,  dscale = sum gy * xhat,  dx = scale * inv * (gy - (dbias + xhat * dscale) / n),
# plus the terms of the batch mean and variance, which are outputs too (for the running statistics).


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def bn_relu_train(x, scale, bias, eps: float, pool: bool):
  """``relu(scale * (x - mean) * rsqrt(var + eps) + bias)`` with the batch's per-channel mean and biased
  variance (in float32 or wider), then a 2x2 max-pool if ``pool``. Returns (out, mean, var); out has
  x's dtype, and equals (with its gradient) `BatchNorm` in training mode, ReLU and `max_pool_2x2_fast`.
  """
  return _bn_relu_fwd(x, scale, bias, eps, pool)[0]


def _bn_relu_fwd(x, scale, bias, eps, pool):
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mean, var = batch_stats(xf)
  inv = jax.lax.rsqrt(var + eps)
  y = (xf - per_channel(mean, x.ndim)) * per_channel(scale * inv, x.ndim) + per_channel(bias, x.ndim)
  out = jax.nn.relu(y).astype(x.dtype)
  if pool:
    # max_pool_2x2_fast's winners (the first maximum of each window in row-major order), and 4 where
    # the window's maximum is 0: ReLU passes no gradient there.
    out, (winner, _) = _max_pool_fwd(out)
    sel = jnp.where(out <= 0, 4, winner).astype(jnp.int8)
  else:
    sel = out > 0
  return (out, mean, var), (x, sel, mean, inv, scale, bias)


def _bn_relu_bwd(eps, pool, res, cts):
  del eps
  x, sel, mean, inv, scale, bias = res
  g, g_mean, g_var = cts
  nd, n = x.ndim, math.prod(x.shape[:-1])
  axes = tuple(range(nd - 1))
  ct = mean.dtype
  xhat = lambda v: (v.astype(ct) - per_channel(mean, nd)) * per_channel(inv, nd)
  if pool:  # Sums over the pooled positions: only each window's winner has a gradient.
    g_sel = jnp.where(sel < 4, g.astype(ct), 0)
    xs = _split_2x2(x)
    x_sel = jnp.select([sel == 0, sel == 1, sel == 2], xs[:3], xs[3])
    (gy,) = _max_pool_bwd((sel, x.shape), g_sel)
  else:
    g_sel = gy = jnp.where(sel, g.astype(ct), 0)
    x_sel = x
  d_bias = jnp.sum(g_sel, axis=axes)
  d_scale = jnp.sum(g_sel * xhat(x_sel), axis=axes)
  a = scale * inv
  # d mean / dx = 1 / n and d var / dx = 2 (x - mean) / n = 2 xhat / (inv n).
  c0 = (g_mean - a * d_bias) / n
  c1 = (2 * g_var / inv - a * d_scale) / n
  dx = gy * per_channel(a, nd) + per_channel(c0, nd) + xhat(x) * per_channel(c1, nd)
  return dx.astype(x.dtype), d_scale.astype(scale.dtype), d_bias.astype(bias.dtype)


bn_relu_train.defvjp(_bn_relu_fwd, _bn_relu_bwd)


# ------------------------------------------------------------------------------------------------
# 3x3 convolution over few input channels as one matrix product (im2col).
# ------------------------------------------------------------------------------------------------
# With 1-3 input channels (the first layer), XLA:CPU's convolution and especially its filter
# gradient run far below the speed of the equivalent matmul; building the [N*H*W, 9*C] patch matrix
# is cheap at this size. The patch columns are ordered (kh, kw, c), matching the [3, 3, C, O] kernel.


def conv3x3_im2col(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-1, padding-1 3x3 convolution of NHWC `x` with an HWIO `kernel`, as patches @ kernel."""
  b, h, w, c = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  patches = jnp.concatenate([xp[:, i : i + h, j : j + w, :] for i in range(3) for j in range(3)], axis=-1)
  return jnp.dot(patches.reshape(b * h * w, 9 * c), kernel.reshape(9 * c, -1)).reshape(b, h, w, -1)


# ------------------------------------------------------------------------------------------------
# 3x3 / stride 1 / padding 1 convolution whose gradients are NHWC x HWIO convolutions too.
# ------------------------------------------------------------------------------------------------
# XLA differentiates a convolution into convolutions with other dimension layouts (the filter gradient
# contracts over the batch) and, in a plain jitted step, rewrites them into the canonical NHWC x HWIO
# form its fast CPU kernels take. Inside a loop (`lax.scan` over train steps) XLA:CPU skips that
# rewrite and runs a naive convolution, ~35x slower here. Written out in canonical form (what XLA
# makes of the plain step), the gradients are fast in both places.


def _conv3x3(x, kernel):
  return jax.lax.conv_general_dilated(
    x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


@jax.custom_vjp
def conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-1, padding-1 3x3 convolution of NHWC `x` with an HWIO `kernel` (`lax.conv_general_dilated`),
  whose input and filter gradients are NHWC x HWIO convolutions as well."""
  return _conv3x3(x, kernel)


def _conv3x3_fwd(x, kernel):
  return _conv3x3(x, kernel), (x, kernel)


def _conv3x3_bwd(res, g):
  x, kernel = res
  # Input gradient: g correlated with the kernel turned by 180 degrees, its in/out axes swapped.
  dx = _conv3x3(g, jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2))
  # Filter gradient: dW[i, j, c, o] = sum_{b,h,w} x[b, h+i-1, w+j-1, c] g[b, h, w, o], a convolution
  # of x with its batch and channel axes swapped [C, H, W, B] by g as an [H, W, B, O] kernel.
  dk = _conv3x3(x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3)).transpose(1, 2, 0, 3)
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)
