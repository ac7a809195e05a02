"""Tests of aplx.data.imagenet: the authors' WebVision / Clothing1M transforms (torchvision's algorithms on
PIL images), with randomness a pure function of (seed, step, example id).

References are computed here from the definitions (PIL calls with explicit parameters, NumPy formulas,
hand-derived crop boxes), never from the module's own helpers.
"""

import io
import itertools
import math

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets", reason="the 'data' extra is not installed (core-only venv)")
from PIL import Image, ImageEnhance  # noqa: E402

from aplx.data import imagenet  # noqa: E402

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
SIZE = 32  # small output side for speed; Cutout length round(112 * 32 / 224) = 16


def _noise(h: int, w: int, seed: int = 0) -> Image.Image:
  return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _ref_normalize(image) -> np.ndarray:
  """float64 (x / 255 - mean) / std from the literal ImageNet constants."""
  return (np.asarray(image, np.float64) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def _params(kind="webvision", width=340, height=256, *, seed=0, step=0, example_id=0, size=SIZE):
  return imagenet._params(kind, width, height, seed=seed, step=step, example_id=example_id, size=size)


def _many_params(kind, width, height, n, **kw):
  return [_params(kind, width, height, example_id=i, **kw) for i in range(n)]


# ---------------------------------------------------------------------------------------------------
# API: kinds, constants, decoding
# ---------------------------------------------------------------------------------------------------


def test_constants_are_imagenet_and_kinds():
  assert imagenet.KINDS == ("webvision", "clothing1m")
  np.testing.assert_array_equal(imagenet.MEAN, IMAGENET_MEAN)
  np.testing.assert_array_equal(imagenet.STD, IMAGENET_STD)
  # A constant image normalises to (c / 255 - mean) / std in every pixel (eval has no randomness).
  flat = Image.new("RGB", (40, 50), (10, 128, 250))
  for kind in imagenet.KINDS:
    out = imagenet.eval_example(flat, kind=kind, size=SIZE)
    want = (np.array([10, 128, 250]) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(out, np.broadcast_to(want, (SIZE, SIZE, 3)), rtol=0, atol=1e-6)


def test_unknown_kind_lists_the_kinds():
  img = _noise(8, 8)
  with pytest.raises(ValueError, match=r"'imagenet'.*webvision.*clothing1m"):
    imagenet.train_example(img, kind="imagenet", seed=0, step=0, example_id=0)
  with pytest.raises(ValueError, match=r"'webvison'.*webvision.*clothing1m"):
    imagenet.eval_example(img, kind="webvison")


def _encode(array: np.ndarray, fmt: str, **kw) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, fmt, **kw)
  return buf.getvalue()


def test_decode_gives_rgb_and_rejects_corrupt_bytes():
  rgb = np.asarray(_noise(12, 17))
  np.testing.assert_array_equal(np.asarray(imagenet.decode(_encode(rgb, "PNG"))), rgb)
  gray = rgb[..., 0]
  out = imagenet.decode(_encode(gray, "PNG"))
  assert out.mode == "RGB" and out.size == (17, 12)
  np.testing.assert_array_equal(np.asarray(out), np.stack([gray] * 3, -1))
  rgba = np.concatenate([rgb, np.full((12, 17, 1), 7, np.uint8)], -1)
  np.testing.assert_array_equal(np.asarray(imagenet.decode(_encode(rgba, "PNG"))), rgb)
  smooth = np.broadcast_to(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (48, 64, 3)).copy()
  jpeg = _encode(smooth, "JPEG", quality=95)
  out = imagenet.decode(jpeg)
  assert out.mode == "RGB" and out.size == (64, 48)
  assert np.abs(np.asarray(out, np.int64) - smooth).max() <= 8  # lossy, but the same picture
  for bad in (b"", b"not an image at all", jpeg[: len(jpeg) // 2]):
    with pytest.raises(ValueError, match="undecodable image"):
      imagenet.decode(bad)


# ---------------------------------------------------------------------------------------------------
# Evaluation transforms against PIL with explicit parameters
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  # (w, h), size -> resized (w, h) and crop (top, left), derived by hand:
  #   shorter side to round(size * 256 / 224), the longer int(short * long / shorter);
  #   crop offsets round((side - size) / 2), Python's round: half to even (2.5 -> 2, 58.5 -> 58).
  "wh, size, resized, top_left",
  [
    ((62, 45), 32, (50, 37), (2, 9)),  # 37 = round(36.57); 50 = int(37 * 62 / 45) = int(50.98)
    ((45, 62), 32, (37, 50), (9, 2)),
    ((50, 37), 32, None, (2, 9)),  # already 37 on the short side: no resize
    ((300, 400), 224, (256, 341), (58, 16)),  # 341 = int(341.33); top round(58.5) = 58
    ((500, 20), 32, (925, 37), (2, 446)),  # extreme aspect: 925 = int(37 * 25)
  ],
)
def test_webvision_eval_is_resize_shorter_then_centre_crop(wh, size, resized, top_left):
  img = _noise(wh[1], wh[0], seed=1)
  ref = img if resized is None else img.resize(resized, Image.Resampling.BILINEAR)
  top, left = top_left
  want = _ref_normalize(np.asarray(ref)[top : top + size, left : left + size])
  out = imagenet.eval_example(img, kind="webvision", size=size)
  assert out.dtype == np.float32 and out.shape == (size, size, 3)
  np.testing.assert_allclose(out, want, rtol=0, atol=2e-6)


@pytest.mark.parametrize("wh", [(61, 45), (20, 500), (32, 32), (5, 3)])
def test_clothing1m_eval_is_a_square_resize(wh):
  img = _noise(wh[1], wh[0], seed=2)
  want = _ref_normalize(img.resize((SIZE, SIZE), Image.Resampling.BILINEAR))
  out = imagenet.eval_example(img, kind="clothing1m", size=SIZE)
  assert out.dtype == np.float32 and out.shape == (SIZE, SIZE, 3)
  np.testing.assert_allclose(out, want, rtol=0, atol=2e-6)


def test_centre_crop_pads_with_zeros_when_the_image_is_smaller():
  # torchvision's CenterCrop: pad left/top by (size - side) // 2, right/bottom by the rest, with 0.
  img = _noise(5, 8, seed=3)  # h 5, w 8; crop 10 x 10 pads 1 | 1 in width and 2 | 3 in height
  out = np.asarray(imagenet._center_crop(img, 10))
  want = np.zeros((10, 10, 3), np.uint8)
  want[2:7, 1:9] = np.asarray(img)
  np.testing.assert_array_equal(out, want)


# ---------------------------------------------------------------------------------------------------
# Training transform: shapes, determinism, composition
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", imagenet.KINDS)
@pytest.mark.parametrize("hw", [(256, 340), (1, 1), (10, 10), (20, 500), (500, 20), (7, 300)])
def test_train_shape_and_dtype(kind, hw):
  img = _noise(*hw)
  for size in (SIZE, 40):
    out = imagenet.train_example(img, kind=kind, seed=1, step=2, example_id=3, size=size)
    assert out.dtype == np.float32 and out.shape == (size, size, 3)
    assert np.isfinite(out).all()
    lo, hi = (0 - IMAGENET_MEAN) / IMAGENET_STD, (1 - IMAGENET_MEAN) / IMAGENET_STD
    assert (out >= lo - 1e-6).all() and (out <= hi + 1e-6).all()


@pytest.mark.parametrize("kind", imagenet.KINDS)
def test_train_is_a_pure_function_of_seed_step_and_id(kind):
  img = _noise(256, 340)
  run = lambda seed, step, i: imagenet.train_example(
    img, kind=kind, seed=seed, step=step, example_id=i, size=SIZE
  )
  first = run(0, 5, 11)
  others = [run(0, 6, 11), run(0, 5, 12), run(1, 5, 11)]  # step, id, seed changed
  np.testing.assert_array_equal(run(0, 5, 11), first)  # no hidden state between calls
  for other in others:
    assert np.abs(other - first).mean() > 0.1
  boxes = {_params(kind, 340, 256, step=s, example_id=i).box for s in range(3) for i in range(20)}
  assert len(boxes) == 60  # every (step, id) crops differently


def test_train_equals_pil_composition_with_its_parameters():
  """The training transform, rebuilt in torchvision's order with PIL calls and a float64 normalisation:
  crop -> bilinear resize -> flip -> rotate (nearest, zero fill) -> jitter ops in order -> normalise ->
  Cutout on the normalised image."""
  img = _noise(256, 340, seed=4)
  for kind, example_id in itertools.product(imagenet.KINDS, range(6)):
    p = _params(kind, 340, 256, seed=9, step=4, example_id=example_id)
    top, left, h, w = p.box
    ref = img.crop((left, top, left + w, top + h)).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    if p.flip:
      ref = ref.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if kind == "clothing1m":
      ref = ref.rotate(p.angle, Image.Resampling.NEAREST, fillcolor=(0, 0, 0))
    for op in p.order:
      if op == 3:
        hh, ss, vv = ref.convert("HSV").split()
        shift = math.trunc(p.factors[3] * 255)
        hh = Image.fromarray(((np.asarray(hh, np.int64) + shift) % 256).astype(np.uint8), "L")
        ref = Image.merge("HSV", (hh, ss, vv)).convert("RGB")
      else:
        enhancer = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)[op]
        ref = enhancer(ref).enhance(p.factors[op])
    want = _ref_normalize(ref)
    if kind == "clothing1m":
      y, x = p.cutout
      want[max(y - 8, 0) : min(y + 8, SIZE), max(x - 8, 0) : min(x + 8, SIZE)] = 0.0
    else:
      assert p.angle is None and p.cutout is None
    out = imagenet.train_example(img, kind=kind, seed=9, step=4, example_id=example_id, size=SIZE)
    np.testing.assert_allclose(out, want, rtol=0, atol=2e-6)


# ---------------------------------------------------------------------------------------------------
# RandomResizedCrop parameters
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wh", [(400, 300), (300, 400), (100, 25), (13, 11)])
def test_crop_boxes_inside_the_image_with_scale_and_ratio_in_range(wh):
  width, height = wh
  area = width * height
  fallback = _fallback_box(width, height)
  n_fallback = 0
  for p in _many_params("webvision", width, height, 1500):
    top, left, h, w = p.box
    assert 0 <= top and top + h <= height and 0 <= left and left + w <= width and h > 0 and w > 0
    if p.box == fallback:
      n_fallback += 1
      continue
    # w = round(sqrt(T a)), h = round(sqrt(T / a)): the drawn area T and ratio a lie in these intervals.
    t_lo, t_hi = (w - 0.5) * (h - 0.5) / area, (w + 0.5) * (h + 0.5) / area
    a_lo, a_hi = (w - 0.5) / (h + 0.5), (w + 0.5) / (h - 0.5) if h > 0.5 else math.inf
    assert t_hi >= 0.08 and t_lo <= 1.0, p.box
    assert a_hi >= 3 / 4 and a_lo <= 4 / 3, p.box
  # Fallback only when all 10 attempts fail: (1 - p)^10, p the chance that one draw fits (by a grid over
  # the uniform scale and log-ratio): rare for 4:3 images, ~11% at 100 x 25 (ratio 4). (At 13 x 11 a
  # fitting draw often rounds to the whole image, the fallback's box, so it is not counted there.)
  if wh == (13, 11):
    return
  grid_s = np.linspace(0.08, 1.0, 801)[:, None] * area
  grid_a = np.exp(np.linspace(math.log(3 / 4), math.log(4 / 3), 801))[None]
  fits = (np.round(np.sqrt(grid_s * grid_a)) <= width) & (np.round(np.sqrt(grid_s / grid_a)) <= height)
  expected = (1 - fits.mean()) ** 10
  sd = math.sqrt(expected * (1 - expected) / 1500)
  assert abs(n_fallback / 1500 - expected) < 4 * sd + 0.003, (n_fallback, expected)
  if wh == (100, 25):
    assert n_fallback > 100


def _fallback_box(width, height):
  """torchvision's fallback: the whole image, trimmed to the nearest ratio in [3/4, 4/3], centred."""
  r = width / height
  w, h = (
    (width, round(width / (3 / 4)))
    if r < 3 / 4
    else (round(height * 4 / 3), height)
    if r > 4 / 3
    else (width, height)
  )
  return ((height - h) // 2, (width - w) // 2, h, w)


@pytest.mark.parametrize(
  "wh, box",
  [
    ((500, 20), (0, 236, 20, 27)),  # h 20, w round(20 * 4/3) = round(26.67) = 27, left (500 - 27) // 2
    ((20, 500), (236, 0, 27, 20)),
    ((3, 2), None),  # tiny: attempts can succeed (w, h in 1..3)
  ],
)
def test_extreme_aspect_ratios_fall_back_to_the_centre(wh, box):
  boxes = {p.box for p in _many_params("webvision", *wh, 200)}
  if box is not None:  # every draw needs scale < 0.06 to fit: all 10 attempts fail, always
    assert boxes == {box}
  else:
    assert len(boxes) > 1 and all(0 < h <= 2 and 0 < w <= 3 for _, _, h, w in boxes)


def test_crop_scale_ratio_and_position_distribution():
  """300 x 300: a draw with scale <= 0.75 always fits (sqrt(s * 4/3) <= 1), so the accepted scales are
  uniform there and their log-ratios uniform on [log 3/4, log 4/3]; positions uniform over the slack."""
  ps = _many_params("webvision", 300, 300, 3000, seed=7, step=1)
  scale = np.array([p.box[2] * p.box[3] / 90000 for p in ps])
  log_ratio = np.array([math.log(p.box[3] / p.box[2]) for p in ps])
  small = (scale > 0.09) & (scale < 0.74)
  counts = np.histogram(scale[small], bins=4, range=(0.09, 0.74))[0]
  assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean(), counts
  assert 0.5 < small.mean() < 0.85  # the flat part holds most of the mass (not only tiny or whole crops)
  lr = log_ratio[small]
  assert abs(lr.mean()) < 0.02 and lr.min() < math.log(0.78) and lr.max() > math.log(1.28)
  assert lr.min() >= math.log(3 / 4) - 0.02 and lr.max() <= math.log(4 / 3) + 0.02
  slack = [
    (p.box[0] / (300 - p.box[2]), p.box[1] / (300 - p.box[3]))
    for p in ps
    if p.box[2] < 250 and p.box[3] < 250
  ]
  pos = np.array(slack)
  assert np.all((pos >= 0) & (pos <= 1)) and np.abs(pos.mean(0) - 0.5).max() < 0.03
  assert np.abs(np.corrcoef(pos.T)[0, 1]) < 0.1  # top and left drawn independently


# ---------------------------------------------------------------------------------------------------
# Flip, jitter, hue, rotation, Cutout
# ---------------------------------------------------------------------------------------------------


def test_flip_is_half_and_mirrors():
  ps = _many_params("webvision", 340, 256, 2000)
  flips = np.array([p.flip for p in ps])
  assert 0.46 < flips.mean() < 0.54
  draws = np.array([[p.box[2] * p.box[3], p.box[0], p.box[1], *p.factors] for p in ps])
  assert np.abs([np.corrcoef(flips, d)[0, 1] for d in draws.T]).max() < 0.1  # its own random stream
  # The jitter ops are per pixel (contrast uses the image mean), so flipping commutes with them.
  img = _noise(256, 340, seed=5)
  p = _params(example_id=3)
  a = imagenet._augment(img, p._replace(flip=False), SIZE)
  b = imagenet._augment(img, p._replace(flip=True), SIZE)
  np.testing.assert_array_equal(b, a[:, ::-1])
  assert not np.array_equal(a, b)


def test_jitter_factors_and_order():
  ps = _many_params("webvision", 340, 256, 2400)
  f = np.array([p.factors for p in ps])
  assert (f[:, :3] >= 0.6).all() and (f[:, :3] <= 1.4).all() and (np.abs(f[:, 3]) <= 0.2).all()
  np.testing.assert_allclose(f.mean(0), [1, 1, 1, 0], atol=0.02)
  np.testing.assert_allclose(f.min(0), [0.6, 0.6, 0.6, -0.2], atol=0.01)
  np.testing.assert_allclose(f.max(0), [1.4, 1.4, 1.4, 0.2], atol=0.01)
  assert np.abs(np.corrcoef(f.T) - np.eye(4)).max() < 0.1  # drawn independently
  orders = [p.order for p in ps]
  counts = {perm: orders.count(perm) for perm in itertools.permutations(range(4))}
  assert sum(counts.values()) == len(ps)  # every order is a permutation of the 4 ops
  assert min(counts.values()) > 60 and max(counts.values()) < 140  # ~100 each of the 24


def _luma(x: np.ndarray) -> np.ndarray:
  return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


@pytest.mark.parametrize("factor", [0.6, 1.37])
def test_jitter_ops_are_brightness_contrast_saturation(factor):
  """Each op alone against its formula (PIL's integer rounding: within 2 levels)."""
  img = _noise(24, 30, seed=6)
  x = np.asarray(img, np.float64)
  wants = {
    0: factor * x,  # blend with black
    1: _luma(x).mean() + factor * (x - _luma(x).mean()),  # blend with the mean grey
    2: _luma(x)[..., None] + factor * (x - _luma(x)[..., None]),  # blend with the pixel's grey
  }
  for op, want in wants.items():
    out = np.asarray(imagenet._jitter(img, (op,), (factor, factor, factor, 0.0)), np.float64)
    np.testing.assert_allclose(out, np.clip(want, 0, 255), rtol=0, atol=2, err_msg=f"op {op}")


@pytest.mark.parametrize("hue", [0.2, -0.2, 0.1, -0.13])
def test_hue_shift_wraps_around(hue):
  # Saturated colours with hue bytes across the whole circle, including both ends of [0, 255].
  hsv = np.zeros((4, 64, 3), np.uint8)
  hsv[..., 0] = np.concatenate([np.arange(0, 16), np.arange(240, 256), np.arange(100, 132)])[None]
  hsv[..., 1], hsv[..., 2] = 255, 200
  img = Image.fromarray(hsv, "HSV").convert("RGB")
  out = imagenet._jitter(img, (3,), (1.0, 1.0, 1.0, hue))
  h, s, v = img.convert("HSV").split()
  shift = math.trunc(hue * 255)  # torchvision: np.int32(hue * 255), truncated toward 0
  h = Image.fromarray(((np.asarray(h, np.int64) + shift) % 256).astype(np.uint8), "L")
  want = Image.merge("HSV", (h, s, v)).convert("RGB")
  np.testing.assert_array_equal(np.asarray(out), np.asarray(want))


def test_rotation_angle_range_and_zero_fill():
  angles = np.array([p.angle for p in _many_params("clothing1m", 340, 256, 1000)])
  assert (np.abs(angles) <= 20).all() and abs(angles.mean()) < 1.2 and np.abs(angles).max() > 19.5
  assert all(p.angle is None for p in _many_params("webvision", 340, 256, 20))
  white = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
  for angle in (20.0, -20.0, 13.0):
    out = np.asarray(imagenet._rotate(white, angle))
    assert out.shape == (SIZE, SIZE, 3)  # expand=False
    for corner in (out[0, 0], out[0, -1], out[-1, 0], out[-1, -1]):
      np.testing.assert_array_equal(corner, [0, 0, 0])
    np.testing.assert_array_equal(out[SIZE // 2 - 4 : SIZE // 2 + 4, SIZE // 2 - 4 : SIZE // 2 + 4], 255)
    # Black = the corners the rotated image does not cover (pixel-grid rounding: +-20%).
    t = math.radians(abs(angle))
    black = (out == 0).all(-1).mean()
    assert 0.8 * _corner_fraction(t) < black < 1.2 * _corner_fraction(t), (black, _corner_fraction(t))
  # In the training transform the fill is black *before* normalisation: -mean / std after it.
  img = Image.new("RGB", (340, 256), (255, 255, 255))
  p = _params("clothing1m", example_id=1)._replace(angle=20.0, cutout=None, factors=(1.0, 1.0, 1.0, 0.0))
  out = imagenet._augment(img, p, SIZE)
  np.testing.assert_allclose(out[0, 0], -IMAGENET_MEAN / IMAGENET_STD, rtol=0, atol=1e-6)


def _corner_fraction(t: float) -> float:
  """Fraction of a square not covered by the same square rotated by t about its centre (0 < t < 90 deg):
  4 corner triangles cut by the rotated edge x cos t + y sin t = 1/2, legs c / (2 cos t) and c / (2 sin t)
  with c = sin t + cos t - 1 (side 1)."""
  c = math.sin(t) + math.cos(t) - 1
  return c * c / math.sin(2 * t)


@pytest.mark.parametrize("size", [SIZE, 224])
def test_cutout_zeroes_a_clipped_square_after_normalisation(size):
  length = round(112 * size / 224)  # 16 at 32 px, 112 at 224 px (the authors')
  half = length // 2
  img = _noise(256, 340, seed=8)
  p = _params("clothing1m", example_id=2, size=size)
  plain = imagenet._augment(img, p._replace(cutout=None), size)
  assert (plain != 0).all()  # so every zero below is Cutout's
  for y, x in [(size // 2, size // 2), (0, 0), (size - 1, 3), (5, size - 2)]:
    out = imagenet._augment(img, p._replace(cutout=(y, x)), size)
    mask = np.zeros((size, size), bool)
    mask[max(y - half, 0) : min(y + half, size), max(x - half, 0) : min(x + half, size)] = True
    np.testing.assert_array_equal(out[mask], 0.0)
    np.testing.assert_array_equal(out[~mask], plain[~mask])
    if (y, x) == (size // 2, size // 2):
      assert mask.sum() == length * length
  # Centres uniform over the pixels, and train_example applies it: its zeros are exactly that square.
  centres = np.array([q.cutout for q in _many_params("clothing1m", 340, 256, 800, size=size)])
  assert centres.min() >= 0 and centres.max() <= size - 1 and centres.dtype.kind == "i"
  for axis in range(2):
    counts = np.bincount(centres[:, axis] * 4 // size, minlength=4)  # quarters of the side: 200 each
    assert counts.min() > 160 and counts.max() < 240, counts
  for example_id in range(3):
    out = imagenet.train_example(img, kind="clothing1m", seed=0, step=0, example_id=example_id, size=size)
    y, x = _params("clothing1m", example_id=example_id, size=size).cutout
    zeros = (out == 0).all(-1)
    rows, cols = np.nonzero(zeros)
    assert (rows.min(), rows.max() + 1) == (max(y - half, 0), min(y + half, size))
    assert (cols.min(), cols.max() + 1) == (max(x - half, 0), min(x + half, size))
  webvision = imagenet.train_example(img, kind="webvision", seed=0, step=0, example_id=0, size=size)
  assert not (webvision == 0).all(-1).any()


def test_random_streams_are_distinct_and_unused_elsewhere():
  from aplx.data import pipeline

  crop = [imagenet._CROP_STREAM + 4 * k + j for k in range(imagenet.CROP_ATTEMPTS) for j in range(4)]
  streams = crop + [imagenet._FLIP_STREAM, imagenet._ANGLE_STREAM]
  streams += [*imagenet._FACTOR_STREAMS, *imagenet._ORDER_STREAMS, *imagenet._CUTOUT_STREAMS]
  assert len(set(streams)) == len(streams) == 52
  assert not set(streams) & {0, 1, 2, 3, pipeline._VALIDATION_STREAM}  # preprocess.augment, hold_out
