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

`realised_rate` and `realised_transition_matrix` measure what a model actually did.
See docs/noise.md for which option is the paper's intent and which reproduces the authors' code.
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
