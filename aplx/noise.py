"""Label-noise models: pure, seeded functions over NumPy label arrays.

Every function takes clean integer labels `[n]` (indexed by a stable example id) and returns noisy
labels `[n]` (int32). The result depends only on the arguments and the seed, never on global NumPy
state, so the noisy label of example `i` is a pure function of (seed, i, the clean labels).

Models (registry `NOISE_MODELS`, names as used by `aplx.data.load_dataset(noise=...)`):

  none       labels unchanged.
  sym        `symmetric`: the authors' protocol, exactly `int(rate * n)` labels flipped, balanced
             across classes, each to a uniformly drawn *different* class; or `method="transition"`,
             per-example sampling from `T = (1 - rate) I + rate / (K - 1) (1 - I)`.
  asym       `asymmetric`: class-dependent flips for mnist / cifar10 / cifar100 (Ma et al. 2020, Sec. 5).
  pairflip   `pairflip`: class i -> i + 1 (mod K) with probability `rate` (Han et al. 2018).
  idn        `instance_dependent`: Xia et al. 2020 part-/instance-dependent noise from the images.
  human      `human`: real human labels (CIFAR-10N / CIFAR-100N), read from TFDS by `aplx.data`.

`realised_rate` and `realised_transition_matrix` measure what a model actually did. Defaults are
the paper's intent (exact realised rates); `authors_options(noise, dataset)` gives the options that
reproduce the official `dataset.py` of Ma et al. 2020 (what the experiment configs' fidelity=authors
uses).

Export for other frameworks (NumPy only, no TensorFlow):

  python -m aplx.noise export --dataset mnist --noise asym --rate 0.4 --seed 0 --out labels.npz

writes the noisy and clean training labels an aplx run uses, in the original files' order (MNIST's
IDX file, CIFAR's python batches: the order of torchvision's and Keras's datasets), each image's aplx
example id, the SHA-256 of the labels and the provenance (`export_labels`, `--format csv`).
"""

from __future__ import annotations

from typing import Callable
import warnings

import numpy as np

__all__ = [
  "NOISE_MODELS",
  "ASYMMETRIC_MAPS",
  "apply",
  "asymmetric",
  "asymmetric_matrix",
  "from_transition_matrix",
  "human",
  "instance_dependent",
  "pairflip",
  "pairflip_matrix",
  "realised_rate",
  "realised_transition_matrix",
  "symmetric",
  "symmetric_matrix",
]


# ---------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------


def _check_rate(rate: float) -> float:
  rate = float(rate)
  if not 0.0 <= rate <= 1.0:  # also rejects NaN
    raise ValueError(f"noise rate must be in [0, 1], got rate={rate!r}.")
  return rate


def _check_labels(labels, num_classes: int) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"labels must be a 1-D integer array, got shape {labels.shape}.")
  if labels.size and not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"labels must be integers, got dtype {labels.dtype}.")
  num_classes = int(num_classes)
  if num_classes < 2:
    raise ValueError(f"num_classes must be >= 2, got num_classes={num_classes}.")
  if labels.size:
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
      bad = lo if lo < 0 else hi
      raise ValueError(
        f"labels must be in [0, {num_classes}) (num_classes={num_classes}), found label {bad}."
      )
  return labels.astype(np.int64)


def _check_transition_matrix(T, num_classes: int | None = None, atol: float = 1e-6) -> np.ndarray:
  T = np.asarray(T, dtype=np.float64)
  if T.ndim != 2 or T.shape[0] != T.shape[1]:
    raise ValueError(f"transition matrix must be square [K, K], got shape {T.shape}.")
  if num_classes is not None and T.shape[0] != num_classes:
    raise ValueError(f"transition matrix is {T.shape[0]}x{T.shape[1]} but num_classes={num_classes}.")
  if not np.all(np.isfinite(T)) or T.min() < 0.0:
    i, j = np.unravel_index(np.argmin(np.where(np.isfinite(T), T, -np.inf)), T.shape)
    raise ValueError(
      f"transition matrix entries must be finite and in [0, 1], got T[{i}, {j}]={float(T[i, j])!r}."
    )
  sums = T.sum(axis=1)
  bad = np.flatnonzero(np.abs(sums - 1.0) > atol)
  if bad.size:
    raise ValueError(
      f"transition matrix must be row-stochastic (each row sums to 1 within {atol}), "
      f"row {bad[0]} sums to {float(sums[bad[0]])!r}."
    )
  return T


def _lemma1_warning(rate: float, num_classes: int) -> None:
  limit = (num_classes - 1) / num_classes
  if rate >= limit:
    warnings.warn(
      f"symmetric noise rate={rate} >= (K-1)/K={limit:.4f} for K={num_classes}: the paper's "
      "Lemma 1 (noise tolerance of normalized losses) needs rate < (K-1)/K; a noisy label is then "
      "no more likely to be the true class than any other class.",
      UserWarning,
      stacklevel=3,
    )


def _rng(seed: int, stream: int) -> np.random.Generator:
  """A generator for (seed, model stream), independent of global NumPy state."""
  return np.random.default_rng(np.random.SeedSequence([int(seed), stream]))


# ---------------------------------------------------------------------------------------------------
# Transition matrices and per-example sampling
# ---------------------------------------------------------------------------------------------------


def symmetric_matrix(rate: float, num_classes: int) -> np.ndarray:
  """`T = (1 - rate) I + rate / (K - 1) (1 - I)`: rate spread uniformly over the other classes."""
  rate = _check_rate(rate)
  k = int(num_classes)
  T = np.full((k, k), rate / (k - 1))
  np.fill_diagonal(T, 1.0 - rate)
  return T


def pairflip_matrix(rate: float, num_classes: int) -> np.ndarray:
  """`T[i, i] = 1 - rate`, `T[i, (i + 1) % K] = rate` (Han et al. 2018, "pair flipping")."""
  rate = _check_rate(rate)
  k = int(num_classes)
  T = (1.0 - rate) * np.eye(k)
  T[np.arange(k), (np.arange(k) + 1) % k] += rate
  return T


def _sample_rows(rows: np.ndarray, u: np.ndarray) -> np.ndarray:
  """Inverse-CDF sampling: one class per row of probabilities `rows [n, K]` from uniforms `u [n]`."""
  cdf = np.cumsum(rows, axis=1)
  cdf[:, -1] = np.inf  # guard against rounding: the last class absorbs it
  return np.argmax(u[:, None] < cdf, axis=1)


def from_transition_matrix(labels, T, *, seed: int) -> np.ndarray:
  """Samples each noisy label independently from row `T[label]` of a row-stochastic matrix.

  Args:
    labels: clean labels `[n]` in `[0, K)`.
    T: `[K, K]` row-stochastic matrix, `T[i, j] = P(noisy = j | clean = i)`.
    seed: noise seed. Example `i` uses the `i`-th uniform of the seed's stream, so its label
      depends only on (seed, i, labels[i], T).

  Returns:
    noisy labels `[n]` int32.
  """
  T = _check_transition_matrix(T)
  labels = _check_labels(labels, T.shape[0])
  u = _rng(seed, 1).random(labels.shape[0])
  return _sample_rows(T[labels], u).astype(np.int32)


# ---------------------------------------------------------------------------------------------------
# Symmetric noise
# ---------------------------------------------------------------------------------------------------


def _balanced_quota(counts: np.ndarray, total: int) -> np.ndarray:
  """Splits `total` flips over classes as evenly as possible without exceeding any class's size.

  With `total` divisible by K and every class large enough this is the authors' `int(total / K)`
  per class. A remainder goes one each to the lowest class ids; a class too small for its share
  gives its excess to the others, again evenly.
  """
  quota = np.zeros_like(counts)
  left = int(total)
  open_ = counts > 0
  while left > 0:
    idx = np.flatnonzero(open_ & (quota < counts))
    share, extra = divmod(left, idx.size)
    add = np.full(idx.size, share)
    add[:extra] += 1
    add = np.minimum(add, counts[idx] - quota[idx])
    quota[idx] += add
    left -= int(add.sum())
  return quota


def _exact_flips(
  labels: np.ndarray, num_classes: int, quota: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
  """Flips exactly `quota[c]` examples of each clean class c, each to a uniform different class."""
  noisy = labels.copy()
  for c in range(num_classes):
    members = np.flatnonzero(labels == c)
    chosen = rng.choice(members, size=int(quota[c]), replace=False)
    offset = rng.integers(1, num_classes, size=chosen.size)  # uniform over the K-1 other classes
    noisy[chosen] = (c + offset) % num_classes
  return noisy


def symmetric(
  labels, *, rate: float, num_classes: int, seed: int, method: str = "exact", authors_quota: bool = False
) -> np.ndarray:
  """Symmetric (uniform) label noise.

  `method="exact"` (default, the authors' protocol, Ma et al. 2020 Sec. 5 / official `dataset.py`):
  exactly `m = int(rate * n)` labels are flipped, `m / K` per clean class, each to a class drawn
  uniformly from the K-1 *other* classes, so the realised noise rate is exactly `m / n`.
  When K does not divide m the remainder goes one each to the lowest class ids; the authors' code
  instead flips only `K * int(m / K)` (`authors_quota=True`). The two agree in every setting of the
  paper (MNIST 60k, CIFAR 50k, rates in tenths).

  `method="transition"`: each label is resampled from `T = (1 - rate) I + rate/(K-1) (1 - I)`;
  the realised rate is `rate` only in expectation.

  Warns when `rate >= (K-1)/K`, where the paper's Lemma 1 no longer holds.

  Args:
    labels: clean labels `[n]` in `[0, num_classes)`.
    rate: noise rate in [0, 1].
    num_classes: K.
    seed: noise seed.
    method: "exact" or "transition".
    authors_quota: with "exact", flip `K * int(int(rate * n) / K)` labels as the official code does.

  Returns:
    noisy labels `[n]` int32.
  """
  rate = _check_rate(rate)
  labels = _check_labels(labels, num_classes)
  _lemma1_warning(rate, int(num_classes))
  if method == "transition":
    return from_transition_matrix(labels, symmetric_matrix(rate, num_classes), seed=seed)
  if method != "exact":
    raise ValueError(f"symmetric noise method must be 'exact' or 'transition', got {method!r}.")
  k = int(num_classes)
  total = int(rate * labels.shape[0])
  if authors_quota:
    total = k * (total // k)
  counts = np.bincount(labels, minlength=k)
  quota = _balanced_quota(counts, total)
  if authors_quota and np.any(quota != total // k):
    raise ValueError(
      f"authors_quota=True needs {total // k} examples per class but the smallest class has "
      f"{int(counts.min())}; lower the rate or use authors_quota=False."
    )
  return _exact_flips(labels, k, quota, _rng(seed, 2)).astype(np.int32)


# ---------------------------------------------------------------------------------------------------
# Asymmetric (class-dependent) noise
# ---------------------------------------------------------------------------------------------------

# Source -> target class flips, in the order the official code applies them.
ASYMMETRIC_MAPS: dict[str, tuple[tuple[int, int], ...]] = {
  # 7 -> 1, 2 -> 7, 5 <-> 6, 3 -> 8
  "mnist": ((7, 1), (2, 7), (5, 6), (6, 5), (3, 8)),
  # truck -> automobile, bird -> airplane, cat <-> dog, deer -> horse
  "cifar10": ((9, 1), (2, 0), (3, 5), (5, 3), (4, 7)),
}
_NUM_CLASSES = {"mnist": 10, "cifar10": 10, "cifar100": 100}


def _cifar100_pairs(group: str, coarse_labels, fine_labels) -> tuple[tuple[int, int], ...]:
  """Circular next-class flips inside each CIFAR-100 super-class."""
  if group == "consecutive":  # official code: super-class j = fine ids 5j .. 5j+4
    groups = [list(range(5 * j, 5 * j + 5)) for j in range(20)]
  elif group == "coarse":
    if coarse_labels is None:
      raise ValueError(
        "asymmetric cifar100 noise with group='coarse' needs coarse_labels (TFDS `coarse_label`, "
        "same length as labels); or pass group='consecutive' for the authors' grouping."
      )
    coarse = np.asarray(coarse_labels).astype(np.int64)
    if coarse.shape != fine_labels.shape:
      raise ValueError(f"coarse_labels shape {coarse.shape} must match labels shape {fine_labels.shape}.")
    groups = []
    for j in range(20):
      members = np.unique(fine_labels[coarse == j])
      groups.append(members.tolist())
    owner = {}
    for j, g in enumerate(groups):
      for c in g:
        if c in owner:
          raise ValueError(f"fine class {c} appears in super-classes {owner[c]} and {j}.")
        owner[c] = j
  else:
    raise ValueError(f"cifar100 group must be 'coarse' or 'consecutive', got {group!r}.")
  pairs = []
  for g in groups:
    g = sorted(g)
    if len(g) > 1:
      pairs += [(g[i], g[(i + 1) % len(g)]) for i in range(len(g))]
  return tuple(pairs)


def _pairs_matrix(pairs, rate: float, k: int) -> np.ndarray:
  T = np.eye(k)
  for s, t in pairs:
    T[s, s], T[s, t] = 1.0 - rate, rate
  return T


def asymmetric_matrix(
  dataset: str, rate: float, *, group: str = "coarse", coarse_labels=None, labels=None
) -> np.ndarray:
  """The transition matrix of `asymmetric(...)` for a dataset (identity outside the flipped classes)."""
  rate = _check_rate(rate)
  pairs = _asymmetric_pairs(
    dataset, group, coarse_labels, None if labels is None else np.asarray(labels).astype(np.int64)
  )
  return _pairs_matrix(pairs, rate, _NUM_CLASSES[dataset])


def _asymmetric_pairs(dataset, group, coarse_labels, labels):
  if dataset not in _NUM_CLASSES:
    raise ValueError(f"no asymmetric noise mapping for dataset {dataset!r}; known: {sorted(_NUM_CLASSES)}.")
  if dataset == "cifar100":
    return _cifar100_pairs(group, coarse_labels, labels)
  return ASYMMETRIC_MAPS[dataset]


def asymmetric(
  labels,
  *,
  rate: float,
  dataset: str,
  seed: int,
  method: str = "exact",
  sequential: bool = False,
  group: str = "coarse",
  coarse_labels=None,
) -> np.ndarray:
  """Class-dependent ("asymmetric") noise that mimics real confusions (Ma et al. 2020, Sec. 5).

  mnist: 7 -> 1, 2 -> 7, 5 <-> 6, 3 -> 8. cifar10: truck -> automobile, bird -> airplane,
  deer -> horse, cat <-> dog. cifar100: within each of the 20 super-classes, each class flips to
  the next one circularly (by ascending fine id). Classes not named keep their labels.

  Defaults are the paper's intent:
    * `method="exact"`: exactly `int(rate * n_c)` examples of each source class c, chosen by their
      *clean* label, flip to its target, so the realised rate of every source class is exact.
    * `group="coarse"` (cifar100): the real super-classes from TFDS `coarse_label`.
  Options that reproduce the official code:
    * `method="transition"`: each example of a source class flips with probability `rate`
      (official code for mnist and cifar100).
    * `sequential=True` (cifar10, with "exact"): pairs applied one after another on the *current*
      labels, so dogs are drawn after some cats became dogs and some flip back to cat
      (official code for cifar10; at rate 0.4 the realised overall rate is ~18.5%, not 20%).
    * `group="consecutive"` (cifar100): super-class j is fine ids 5j..5j+4 (official code), which
      are *not* the real CIFAR-100 super-classes.

  Args:
    labels: clean labels `[n]`.
    rate: flip probability of each source class, in [0, 1].
    dataset: "mnist", "cifar10" or "cifar100".
    seed: noise seed.
    method: "exact" or "transition".
    sequential: see above.
    group: "coarse" or "consecutive" (cifar100 only).
    coarse_labels: `[n]` super-class of each example (cifar100 with group="coarse").

  Returns:
    noisy labels `[n]` int32.
  """
  rate = _check_rate(rate)
  if dataset not in _NUM_CLASSES:
    raise ValueError(f"no asymmetric noise mapping for dataset {dataset!r}; known: {sorted(_NUM_CLASSES)}.")
  k = _NUM_CLASSES[dataset]
  labels = _check_labels(labels, k)
  pairs = _asymmetric_pairs(dataset, group, coarse_labels, labels)
  if method == "transition":
    if sequential:
      raise ValueError("sequential=True only applies to method='exact'.")
    return from_transition_matrix(labels, _pairs_matrix(pairs, rate, k), seed=seed)
  if method != "exact":
    raise ValueError(f"asymmetric noise method must be 'exact' or 'transition', got {method!r}.")
  rng = _rng(seed, 3)
  noisy = labels.copy()
  for s, t in pairs:
    pool = np.flatnonzero((noisy if sequential else labels) == s)
    chosen = rng.choice(pool, size=int(rate * pool.size), replace=False)
    noisy[chosen] = t
  return noisy.astype(np.int32)


# ---------------------------------------------------------------------------------------------------
# Pair flipping, instance-dependent and human noise
# ---------------------------------------------------------------------------------------------------


def pairflip(labels, *, rate: float, num_classes: int, seed: int, method: str = "transition") -> np.ndarray:
  """Pair-flip noise (Han et al. 2018, Co-teaching): class i -> (i + 1) mod K.

  `method="transition"` (default, as in Co-teaching): each label flips with probability `rate`.
  `method="exact"`: exactly `int(rate * n_c)` examples of every class flip.
  """
  rate = _check_rate(rate)
  k = int(num_classes)
  labels = _check_labels(labels, k)
  if method == "transition":
    return from_transition_matrix(labels, pairflip_matrix(rate, k), seed=seed)
  if method != "exact":
    raise ValueError(f"pairflip noise method must be 'exact' or 'transition', got {method!r}.")
  rng = _rng(seed, 4)
  noisy = labels.copy()
  for c in range(k):
    pool = np.flatnonzero(labels == c)
    chosen = rng.choice(pool, size=int(rate * pool.size), replace=False)
    noisy[chosen] = (c + 1) % k
  return noisy.astype(np.int32)


def _truncated_normal(rng, mean: float, std: float, size: int, lo=0.0, hi=1.0) -> np.ndarray:
  """Samples N(mean, std) truncated to [lo, hi] by inverse CDF (scipy, a JAX dependency)."""
  from scipy import special

  a = special.ndtr((lo - mean) / std)
  b = special.ndtr((hi - mean) / std)
  u = a + (b - a) * rng.random(size)
  return np.clip(mean + std * special.ndtri(u), lo, hi)


def instance_dependent(
  labels, features, *, rate: float, num_classes: int, seed: int, norm_std: float = 0.1, chunk: int = 4096
) -> np.ndarray:
  """Instance-dependent ("part-dependent", IDN) noise of Xia et al., NeurIPS 2020.

  Each example i draws a flip rate `q_i ~ N(rate, norm_std^2)` truncated to [0, 1]; a seeded random
  projection `W[y] ~ N(0, 1)^{D x K}` of its flattened features gives scores `s = x_i W[y_i]`;
  the true class is masked out and `p_i = q_i softmax(s)`, `p_i[y_i] = 1 - q_i`; the noisy label
  is sampled from `p_i`. The realised rate is close to `rate` (truncation at 0 and 1 shifts it
  slightly near the ends); `rate=0` returns the clean labels.

  Args:
    labels: clean labels `[n]`.
    features: `[n, ...]` per-example inputs (aplx uses the normalised images), flattened to D.
    rate: mean flip rate in [0, 1].
    num_classes: K.
    seed: noise seed (flip rates, projection and sampling all derive from it).
    norm_std: std of the per-example flip rate (0.1 in Xia et al.).
    chunk: rows per matmul, to bound memory.

  Returns:
    noisy labels `[n]` int32.
  """
  rate = _check_rate(rate)
  k = int(num_classes)
  labels = _check_labels(labels, k)
  x = np.asarray(features, dtype=np.float32).reshape(labels.shape[0], -1)
  if x.shape[0] != labels.shape[0]:
    raise ValueError(f"features has {x.shape[0]} rows but labels has {labels.shape[0]}.")
  if norm_std <= 0:
    raise ValueError(f"norm_std must be > 0, got {norm_std}.")
  if rate == 0.0:  # truncated N(0, 0.1^2) would still flip ~8%; rate 0 means clean labels
    return labels.astype(np.int32)
  rng = _rng(seed, 5)
  q = _truncated_normal(rng, rate, norm_std, labels.shape[0])
  u = rng.random(labels.shape[0])
  probs = np.empty((labels.shape[0], k), dtype=np.float64)
  for c in range(k):  # one [D, K] projection per clean class, drawn from (seed, class)
    w = _rng(seed, 1000 + c).standard_normal((x.shape[1], k)).astype(np.float32)
    members = np.flatnonzero(labels == c)
    for start in range(0, members.size, chunk):
      idx = members[start : start + chunk]
      s = (x[idx] @ w).astype(np.float64)
      s[:, c] = -np.inf
      s = np.exp(s - s.max(axis=1, keepdims=True))
      p = q[idx, None] * s / s.sum(axis=1, keepdims=True)
      p[:, c] = 1.0 - q[idx]
      probs[idx] = p
  return _sample_rows(probs, u).astype(np.int32)


def human(labels, human_labels, *, num_classes: int) -> np.ndarray:
  """Real human noise: returns the human labels (e.g. TFDS `cifar10_n` `worse_label`), validated."""
  labels = _check_labels(labels, num_classes)
  noisy = _check_labels(human_labels, num_classes)
  if noisy.shape != labels.shape:
    raise ValueError(f"human_labels shape {noisy.shape} must match labels shape {labels.shape}.")
  return noisy.astype(np.int32)


# ---------------------------------------------------------------------------------------------------
# Measuring noise
# ---------------------------------------------------------------------------------------------------


def realised_rate(clean, noisy) -> float:
  """Fraction of examples whose noisy label differs from the clean one."""
  clean, noisy = np.asarray(clean), np.asarray(noisy)
  if clean.shape != noisy.shape:
    raise ValueError(f"clean shape {clean.shape} must match noisy shape {noisy.shape}.")
  return float(np.mean(clean != noisy)) if clean.size else 0.0


def realised_transition_matrix(clean, noisy, num_classes: int) -> np.ndarray:
  """`T_hat[i, j]` = fraction of clean-class-i examples labelled j. Rows of absent classes are 0."""
  clean = _check_labels(clean, num_classes)
  noisy = _check_labels(noisy, num_classes)
  if clean.shape != noisy.shape:
    raise ValueError(f"clean shape {clean.shape} must match noisy shape {noisy.shape}.")
  k = int(num_classes)
  counts = np.bincount(clean * k + noisy, minlength=k * k).reshape(k, k).astype(np.float64)
  totals = counts.sum(axis=1, keepdims=True)
  return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


# ---------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------
# Each entry: fn(clean, *, rate, seed, num_classes, dataset, features, extra, **options) -> noisy.
# `features` are the normalised images (for idn); `extra` holds TFDS side fields (coarse_label,
# human labels) keyed by feature name.


def _none(clean, *, rate, seed, num_classes, dataset, features, extra, **options):
  del seed, dataset, features, extra
  if rate:
    raise ValueError(f"noise='none' takes rate=0, got rate={rate}.")
  if options:
    raise ValueError(f"noise='none' takes no options, got {sorted(options)}.")
  return _check_labels(clean, num_classes).astype(np.int32)


def _sym(clean, *, rate, seed, num_classes, dataset, features, extra, **options):
  del dataset, features, extra
  return symmetric(clean, rate=rate, num_classes=num_classes, seed=seed, **options)


def _asym(clean, *, rate, seed, num_classes, dataset, features, extra, **options):
  del num_classes, features
  base = {"cifar10_n": "cifar10", "cifar100_n": "cifar100"}.get(dataset, dataset)
  if base == "cifar100" and "coarse_labels" not in options and "coarse_label" in extra:
    options["coarse_labels"] = extra["coarse_label"]
  return asymmetric(clean, rate=rate, dataset=base, seed=seed, **options)


def _pairflip(clean, *, rate, seed, num_classes, dataset, features, extra, **options):
  del dataset, features, extra
  return pairflip(clean, rate=rate, num_classes=num_classes, seed=seed, **options)


def _idn(clean, *, rate, seed, num_classes, dataset, features, extra, **options):
  del dataset, extra
  if features is None:
    raise ValueError("noise='idn' needs the images (features).")
  return instance_dependent(clean, features, rate=rate, num_classes=num_classes, seed=seed, **options)


def _human(clean, *, rate, seed, num_classes, dataset, features, extra, field=None, **options):
  del seed, features
  if options:
    raise ValueError(f"human noise takes no options, got {sorted(options)}.")
  if rate:
    raise ValueError(f"human noise has no rate (it is fixed by the annotators), got rate={rate}.")
  fields = sorted(f for f in extra if f != "coarse_label")
  if field not in extra or field == "coarse_label":
    raise ValueError(
      f"human noise field {field!r} is not available for dataset {dataset!r}; "
      f"available: {fields} (use noise='human:<field>' with cifar10_n or cifar100_n)."
    )
  return human(clean, extra[field], num_classes=num_classes)


NOISE_MODELS: dict[str, Callable[..., np.ndarray]] = {
  "none": _none,
  "sym": _sym,
  "asym": _asym,
  "pairflip": _pairflip,
  "idn": _idn,
  "human": _human,
}


def apply(
  noise: str,
  clean,
  *,
  rate: float = 0.0,
  seed: int = 0,
  num_classes: int,
  dataset: str | None = None,
  features=None,
  extra=None,
  **options,
) -> np.ndarray:
  """Applies a registered noise model by name: "none", "sym", "asym", "pairflip", "idn",
  or "human:<field>" (e.g. "human:worse_label").

  Returns noisy labels `[n]` int32.
  """
  name, _, field = noise.partition(":")
  if name not in NOISE_MODELS:
    raise ValueError(
      f"unknown noise model {noise!r}; known: {sorted(NOISE_MODELS)} (human noise as 'human:<field>')."
    )
  if field and name != "human":
    raise ValueError(f"only human noise takes a ':<field>' suffix, got {noise!r}.")
  if name == "human":
    options["field"] = field or None
  _check_rate(rate)
  return NOISE_MODELS[name](
    clean,
    rate=rate,
    seed=seed,
    num_classes=num_classes,
    dataset=dataset,
    features=features,
    extra=dict(extra or {}),
    **options,
  )


# ---------------------------------------------------------------------------------------------------
# The authors' noise options
# ---------------------------------------------------------------------------------------------------


def authors_options(noise: str, dataset: str) -> dict:
  """The options of `apply(noise, ...)` that reproduce the official `dataset.py` of Ma et al. 2020.

  sym: exactly K * int(int(rate n) / K) flips (`method="exact", authors_quota=True`). asym: MNIST flips
  each example of a source class with probability `rate` (`method="transition"`); CIFAR-10 applies the
  pairs one after another on the current labels (`sequential=True`); CIFAR-100 uses "5 consecutive ids"
  groups with per-example flips. {} where the official code has no such noise.
  """
  if noise == "sym":
    return {"method": "exact", "authors_quota": True}
  if noise == "asym":
    return {
      "mnist": {"method": "transition"},
      "cifar10": {"method": "exact", "sequential": True},
      "cifar100": {"method": "transition", "group": "consecutive"},
    }.get(dataset, {})
  return {}


# ---------------------------------------------------------------------------------------------------
# Export: noisy labels as files any framework can load (python -m aplx.noise export ...)
# ---------------------------------------------------------------------------------------------------
# Core-only on purpose (NumPy, hashlib, pickle): no TensorFlow Datasets, so a PyTorch or Keras user can
# run it. The labels are read from the original files, in their own order, and the noise is drawn
# exactly as `aplx.data.load_dataset` draws it: over the labels in TFDS's order (the trainer's example
# ids), then mapped back to the files' order.

EXPORT_DATASETS = {
  # name: (num_classes, what --raw_dir holds)
  "mnist": (10, "the MNIST IDX files (train-labels-idx1-ubyte[.gz]); default $APLX_MNIST_DIR"),
  "cifar10": (10, "cifar-10-python.tar.gz or its folder cifar-10-batches-py/"),
  "cifar100": (100, "cifar-100-python.tar.gz or its folder cifar-100-python/"),
}
CANONICAL_ORDER = (
  "the order of the original files: MNIST train-labels-idx1-ubyte, the CIFAR python batches "
  "data_batch_1..5 / train (what torchvision.datasets.MNIST / CIFAR10 / CIFAR100(train=True) and "
  "tf.keras.datasets use); index i is the i-th training image there"
)


def _read_idx_labels(path) -> np.ndarray:
  """The labels of an IDX1 file (optionally gzipped): magic 0x00000801, count, then uint8 labels."""
  import gzip
  import pathlib

  raw = pathlib.Path(path).read_bytes()
  if raw[:2] == b"\x1f\x8b":
    raw = gzip.decompress(raw)
  if len(raw) < 8 or raw[:4] != b"\x00\x00\x08\x01":
    raise ValueError(f"{path} is not an IDX label file (magic {raw[:4].hex()}, expected 00000801).")
  n = int.from_bytes(raw[4:8], "big")
  if len(raw) != 8 + n:
    raise ValueError(f"{path} declares {n} labels but holds {len(raw) - 8}: truncated; download it again.")
  return np.frombuffer(raw, np.uint8, offset=8).astype(np.int64)


def _cifar_members(raw_dir, folder: str, names: list[str]) -> dict[str, bytes]:
  """The python-pickle members `names` of a CIFAR tarball in raw_dir, or of its extracted folder."""
  import pathlib
  import tarfile

  raw = pathlib.Path(raw_dir)
  for d in (raw / folder, raw):
    if all((d / n).is_file() for n in names):
      return {n: (d / n).read_bytes() for n in names}
  tars = sorted(raw.glob(f"{folder}*.tar.gz")) + sorted(raw.glob("*.tar.gz")) if raw.is_dir() else [raw]
  for path in tars:
    if not tarfile.is_tarfile(path):
      continue
    with tarfile.open(path) as tar:
      found = {m.name.split("/")[-1]: m for m in tar.getmembers() if m.name.startswith(folder + "/")}
      if all(n in found for n in names):
        return {n: tar.extractfile(found[n]).read() for n in names}
  raise FileNotFoundError(f"{raw_dir} holds neither {folder}/ with {names} nor a tarball containing them.")


def _unpickle_labels(blob: bytes, *keys: str) -> list[np.ndarray]:
  """Label lists of a CIFAR python batch (a pickled dict; only lists and NumPy arrays are unpickled)."""
  import io
  import pickle

  class _Restricted(pickle.Unpickler):  # The batches hold a dict of bytes, lists and ndarrays only.
    def find_class(self, module, name):
      if module.startswith("numpy") and name in ("ndarray", "dtype", "_reconstruct", "scalar"):
        return super().find_class(module, name)
      raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR batch")

  d = _Restricted(io.BytesIO(blob), encoding="bytes").load()
  return [np.asarray(d[k.encode()], np.int64) for k in keys]


def read_train_labels(dataset: str, raw_dir=None) -> dict[str, np.ndarray]:
  """The clean training labels of `dataset` in the original files' order (`CANONICAL_ORDER`).

  Returns {"label": [n]} and, for cifar100, "coarse_label" (the super-class, for group="coarse").
  Needs only NumPy: reads the MNIST IDX label file or the CIFAR python batches.
  """
  import os
  import pathlib

  if dataset not in EXPORT_DATASETS:
    raise ValueError(f"dataset {dataset!r}: export knows {sorted(EXPORT_DATASETS)}.")
  if dataset == "mnist":
    raw_dir = raw_dir or os.environ.get("APLX_MNIST_DIR")
    if not raw_dir:
      raise ValueError(f"mnist: pass --raw_dir ({EXPORT_DATASETS['mnist'][1]}).")
    for name in ("train-labels-idx1-ubyte", "train-labels-idx1-ubyte.gz", "train-labels.idx1-ubyte"):
      if (pathlib.Path(raw_dir) / name).is_file():
        return {"label": _read_idx_labels(pathlib.Path(raw_dir) / name)}
    raise FileNotFoundError(f"{raw_dir} has no train-labels-idx1-ubyte[.gz].")
  if raw_dir is None:
    raise ValueError(f"{dataset}: pass --raw_dir ({EXPORT_DATASETS[dataset][1]}).")
  if dataset == "cifar10":
    names = [f"data_batch_{i}" for i in range(1, 6)]
    members = _cifar_members(raw_dir, "cifar-10-batches-py", names)
    return {"label": np.concatenate([_unpickle_labels(members[n], "labels")[0] for n in names])}
  (blob,) = _cifar_members(raw_dir, "cifar-100-python", ["train"]).values()
  fine, coarse = _unpickle_labels(blob, "fine_labels", "coarse_labels")
  return {"label": fine, "coarse_label": coarse}


def tfds_order(n: int, split: str = "train") -> np.ndarray:
  """`order[t]` = the original file index of TFDS example t (aplx's example id t).

  TFDS writes the examples of a split sorted by md5(split name + key); the MNIST and CIFAR builders
  (the stock ones and aplx's offline ones) key example i of the original files by str(i). aplx's
  example ids are the positions in that order.
  """
  import hashlib

  salt = hashlib.md5(split.encode())
  digests = []
  for i in range(int(n)):
    h = salt.copy()
    h.update(str(i).encode())
    digests.append(h.hexdigest())  # 32 hex digits: string order is numeric order.
  return np.argsort(np.asarray(digests), kind="stable")


def labels_sha256(labels) -> str:
  """SHA-256 of labels as little-endian int32 bytes, in the order given (hex)."""
  import hashlib

  return hashlib.sha256(np.ascontiguousarray(np.asarray(labels), dtype="<i4").tobytes()).hexdigest()


def export_labels(
  dataset: str,
  noise: str,
  *,
  rate: float = 0.0,
  seed: int = 0,
  raw_dir=None,
  authors: bool = False,
  **options,
) -> dict:
  """The noisy labels a run with these settings trains on, in the original files' order.

  The noise is what `aplx.data.load_dataset(dataset, noise=noise, rate=rate, noise_seed=seed,
  **options)` draws (over the whole training split; a run with `subset` draws it over the subset
  instead). `authors=True` adds `authors_options(noise, dataset)`, as the configs' fidelity=authors.

  Returns a dict: "noisy_label", "clean_label", "aplx_id" (the trainer's example id of each image)
  int32 [n], in `CANONICAL_ORDER`; "provenance": a dict (aplx version, dataset, noise, rate, seed,
  options, realised rate, order, the SHA-256 of the noisy and the clean labels).
  """
  from aplx import __version__

  rate = _check_rate(rate)
  num_classes = EXPORT_DATASETS[dataset][0] if dataset in EXPORT_DATASETS else None
  files = read_train_labels(dataset, raw_dir)
  if authors:
    options = {**authors_options(noise.partition(":")[0], dataset), **options}
  clean = files["label"]
  order = tfds_order(clean.shape[0])  # order[id] = file index
  extra = {k: v[order] for k, v in files.items() if k != "label"}
  noisy_by_id = apply(
    noise,
    clean[order],
    rate=rate,
    seed=seed,
    num_classes=num_classes,
    dataset=dataset,
    extra=extra,
    **options,
  )
  noisy = np.empty_like(noisy_by_id)
  noisy[order] = noisy_by_id
  aplx_id = np.empty(clean.shape[0], np.int32)
  aplx_id[order] = np.arange(clean.shape[0], dtype=np.int32)
  provenance = {
    "aplx_version": __version__,
    "dataset": dataset,
    "split": "train",
    "num_examples": int(clean.shape[0]),
    "num_classes": num_classes,
    "noise": noise,
    "rate": rate,
    "seed": int(seed),
    "options": {k: v for k, v in options.items()},
    "realised_rate": realised_rate(clean, noisy),
    "order": CANONICAL_ORDER,
    "aplx_id": "the example id aplx's trainer gives image i (its index in TFDS's order of the split)",
    "noisy_label_sha256": labels_sha256(noisy),
    "clean_label_sha256": labels_sha256(clean),
    "sha256_of": "the labels as little-endian int32, in file order",
  }
  return {
    "noisy_label": noisy.astype(np.int32),
    "clean_label": clean.astype(np.int32),
    "aplx_id": aplx_id,
    "provenance": provenance,
  }


def write_export(result: dict, out, fmt: str = "npz") -> None:
  """Writes `export_labels`' result: npz (arrays + a JSON `provenance` string) or csv (a `# ` header)."""
  import json

  prov = json.dumps(result["provenance"], sort_keys=True)
  if fmt == "npz":
    with open(out, "wb") as f:
      np.savez(
        f,
        noisy_label=result["noisy_label"],
        clean_label=result["clean_label"],
        aplx_id=result["aplx_id"],
        provenance=np.asarray(prov),
      )
    return
  if fmt != "csv":
    raise ValueError(f"format {fmt!r}: use 'npz' or 'csv'.")
  with open(out, "w", newline="\n") as f:
    for k, v in sorted(result["provenance"].items()):
      f.write(f"# {k}: {json.dumps(v)}\n")
    f.write("index,noisy_label,clean_label,aplx_id\n")
    rows = np.stack(
      [
        np.arange(result["noisy_label"].shape[0]),
        result["noisy_label"],
        result["clean_label"],
        result["aplx_id"],
      ],
      axis=1,
    )
    np.savetxt(f, rows, fmt="%d", delimiter=",")


def _parse_option(text: str):
  key, sep, value = text.partition("=")
  if not sep:
    raise ValueError(f"--option {text!r}: expected key=value, e.g. method=transition.")
  for kind in (int, float):
    try:
      return key, kind(value)
    except ValueError:
      pass
  return key, {"true": True, "false": False}.get(value.lower(), value)


def main(argv=None) -> None:
  """`python -m aplx.noise export --dataset mnist --noise asym --rate 0.4 --seed 0 --out labels.npz`."""
  import argparse

  parser = argparse.ArgumentParser(
    prog="python -m aplx.noise",
    description="Noisy labels as files any framework can load (NumPy only; no TensorFlow needed).",
  )
  sub = parser.add_subparsers(dest="command", required=True)
  ex = sub.add_parser(
    "export",
    help="write the noisy and clean training labels an aplx run uses, in the original files' order",
    description=(
      "Writes noisy_label, clean_label and aplx_id (the trainer's example id) for every training image, in "
      f"{CANONICAL_ORDER}, with the SHA-256 of the labels and the provenance (aplx version, noise, rate, "
      "seed, options). npz: np.load(path)['noisy_label']; csv: pandas.read_csv(path, comment='#')."
    ),
  )
  ex.add_argument("--dataset", required=True, choices=sorted(EXPORT_DATASETS))
  ex.add_argument("--noise", required=True, help="none, sym, asym, pairflip (see aplx.noise)")
  ex.add_argument("--rate", type=float, default=0.0)
  ex.add_argument("--seed", type=int, default=0, help="the noise seed (a config's noise.seed)")
  ex.add_argument(
    "--raw_dir", default=None, help="; ".join(f"{k}: {v[1]}" for k, v in EXPORT_DATASETS.items())
  )
  ex.add_argument(
    "--authors",
    action="store_true",
    help="the authors' noise options (the configs' fidelity=authors, their default): see authors_options",
  )
  ex.add_argument("--option", action="append", default=[], help="a noise option key=value (repeatable)")
  ex.add_argument("--format", choices=("npz", "csv"), default=None, help="default: from --out's suffix")
  ex.add_argument("--out", required=True)
  args = parser.parse_args(argv)
  fmt = args.format or ("csv" if str(args.out).endswith(".csv") else "npz")
  try:
    result = export_labels(
      args.dataset,
      args.noise,
      rate=args.rate,
      seed=args.seed,
      raw_dir=args.raw_dir,
      authors=args.authors,
      **dict(_parse_option(o) for o in args.option),
    )
    write_export(result, args.out, fmt)
  except (ValueError, OSError) as e:  # Bad input or a missing file: one line, no traceback.
    parser.exit(2, f"python -m aplx.noise export: error: {e}\n")
  p = result["provenance"]
  print(
    f"{args.out}: {p['num_examples']} {args.dataset} training labels, noise {p['noise']} rate {p['rate']} "
    f"seed {p['seed']} options {p['options']}, realised rate {p['realised_rate']:.4f}, "
    f"noisy_label sha256 {p['noisy_label_sha256']}"
  )


if __name__ == "__main__":
  main()
