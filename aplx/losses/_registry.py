"""The name registry: `get(name, **hyperparameters)` -> a `Loss`, `info`, `names`, the authors' fidelity."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from aplx.losses import _authors, _base, _beyond, _classic, _composition, _normalized

_BASE: dict[str, tuple[_composition.LossFn, str]] = {
  "ce": (_classic.cross_entropy, "Ma et al. 2020 Sec. 3.1"),
  "fl": (_classic.focal_loss, "Lin et al. 2017; Ma et al. 2020 Sec. 3.1"),
  "mae": (_classic.mae, "Ghosh et al. 2017; Ma et al. 2020 Sec. 3.1"),
  "rce": (_classic.rce, "Wang et al. 2019; Ma et al. 2020 Sec. 3.1"),
  "gce": (_classic.gce, "Zhang & Sabuncu 2018; Ma et al. 2020 Sec. 5.3"),
  "sce": (_classic.sce, "Wang et al. 2019"),
  "nce": (_normalized.nce, "Ma et al. 2020 Eq. 2"),
  "nfl": (_normalized.nfl, "Ma et al. 2020 Eq. 5"),
  "nmae": (_normalized.nmae, "Ma et al. 2020 Eq. 3"),
  "nrce": (_normalized.nrce, "Ma et al. 2020 Eq. 4"),
  "ngce": (_normalized.ngce, "Ma et al. 2020 Sec. 5.3"),
  "nnce": (_beyond.nnce, "Ye et al. 2023 (ANL)"),
  "nnfl": (_beyond.nnfl, "Ye et al. 2023 (ANL)"),
  "anl-ce": (_beyond.anl_ce, "Ye et al. 2023 (ANL)"),
  "anl-fl": (_beyond.anl_fl, "Ye et al. 2023 (ANL)"),
  "agce": (_beyond.agce, "Zhou et al. 2021"),
  "aul": (_beyond.aul, "Zhou et al. 2021"),
  "ael": (_beyond.ael, "Zhou et al. 2021"),
  "poly1": (_beyond.poly1, "Leng et al. 2022"),
  "taylor-ce": (_beyond.taylor_ce, "Feng et al. 2020"),
  "ce-eps": (_beyond.ce_eps, "Wang et al. 2024 (epsilon-softmax)"),
  "nlnl": (_beyond.nlnl, "Kim et al. 2019"),
  "dmi": (_beyond.dmi, "Xu et al. 2019 (L_DMI; batch-level)"),
}

# Pairs (alpha * first + beta * second) with a name in the literature. Any other "a+b" of two base
# names is accepted by `get` too.
_PAIRS: dict[str, str] = {
  "nce+rce": "Ma et al. 2020 (APL)",
  "nce+mae": "Ma et al. 2020 (APL)",
  "nfl+rce": "Ma et al. 2020 (APL)",
  "nfl+mae": "Ma et al. 2020 (APL)",
  "ngce+rce": "Ma et al. 2020 Sec. 5.3 (APL)",
  "ngce+mae": "Ma et al. 2020 Sec. 5.3 (APL)",
  "nfl+nce": "Ma et al. 2020 Fig. 4 (AAL, active+active)",
  "mae+rce": "Ma et al. 2020 Fig. 4 (PPL, passive+passive)",
  "nce+agce": "Zhou et al. 2021",
  "nce+aul": "Zhou et al. 2021",
  "nce+ael": "Zhou et al. 2021",
  "ce-eps+mae": "Wang et al. 2024 (epsilon-softmax)",
}

_ALIASES = {
  "cross-entropy": "ce",
  "focal": "fl",
  "poly-1": "poly1",
  "taylor": "taylor-ce",
  "eps-ce": "ce-eps",
  "anl": "anl-ce",
}

FIDELITIES = ("paper", "authors")

# Keyword arguments of every loss that belong to the call (data), not to the hyperparameters `get` binds.
_CALL_ARGS = ("key", "axis", "where")


@dataclasses.dataclass(frozen=True)
class LossInfo:
  """What the registry knows about a loss name."""

  name: str
  kind: str  # 'active', 'passive', '<kind>+<kind>' for a pair (APL = 'active+passive'), 'batch' (DMI)
  needs_key: bool  # call as loss_fn(logits, labels, key=...) when True
  params: dict[str, Any]  # every parameter `get` accepts -> default (single losses: also `scale`)
  reference: str
  soft_labels: bool = False  # accepts class probabilities [..., K] as labels (pairs: both terms)
  batch_level: bool = False  # one value per batch, broadcast to [...] (DMI); not a per-example loss


def names() -> tuple[str, ...]:
  """All registered loss names: the single losses, then the named pairs.

  `get` also takes any 'a+b' of two single losses and the class names of the authors' `loss.py`
  (`authors_class_names()`).
  """
  return tuple(_BASE) + tuple(_PAIRS)


def authors_class_names() -> tuple[str, ...]:
  """The class names of the official `loss.py` that `get` accepts (`get('NCEandRCE', alpha=1, beta=1)`)."""
  return tuple(_authors.AUTHORS_CLASSES)


def _canonical(name: str) -> str:
  if not isinstance(name, str):
    raise TypeError(f"loss name must be a string, got {type(name).__name__}.")
  n = name.strip().lower().replace("_", "-").replace(" ", "")
  parts = [_ALIASES.get(p, p) for p in n.split("+")]
  return "+".join(parts)


def _authors_class(name) -> _authors.AuthorsClass | None:
  return _authors.AUTHORS_CLASSES.get(name.strip()) if isinstance(name, str) else None


def _parts(name: str) -> list[str]:
  cls = _authors_class(name)
  canon = cls.loss if cls else _canonical(name)
  parts = canon.split("+")
  if len(parts) > 2 or any(p not in _BASE for p in parts):
    raise ValueError(
      f"Unknown loss {name!r}. Valid names: {', '.join(names())} (or any 'a+b' of the single "
      f"losses, weighted by alpha and beta; or a class name of the authors' loss.py: "
      f"{', '.join(authors_class_names())})."
    )
  if len(parts) == 2:
    for p in parts:
      if _BASE[p][0].batch_level:
        raise ValueError(
          f"{name!r}: {p} is a batch-level loss (one value per batch) and does not pair with a "
          f"per-example loss here; add the two yourself: alpha * a(logits, labels).mean() + "
          f"beta * {p}(logits, labels).mean()."
        )
  return parts


def _kw_params(fn) -> dict[str, Any]:
  """The keyword-only hyperparameters of a loss function and their defaults."""
  return {
    p.name: p.default
    for p in inspect.signature(fn).parameters.values()
    if p.kind == inspect.Parameter.KEYWORD_ONLY and p.name not in _CALL_ARGS
  }


def _defaults(parts: list[str]) -> dict[str, Any]:
  """Every hyperparameter of a single loss (its own, then `scale`) or a pair (alpha, beta, the terms')."""
  if len(parts) == 1:
    return {**_kw_params(_BASE[parts[0]][0]), "scale": 1.0}
  params: dict[str, Any] = {"alpha": 1.0, "beta": 1.0}
  for p in parts:
    for k, v in _kw_params(_BASE[p][0]).items():
      if k not in ("alpha", "beta"):
        params.setdefault(k, v)
  return params


def _fidelity(name: str, fidelity: str | None) -> str:
  cls = _authors_class(name)
  if fidelity is None:
    return "authors" if cls else "paper"
  if fidelity not in FIDELITIES:
    raise ValueError(
      f"fidelity={fidelity!r}: use 'paper' (the paper's formulas, aplx's defaults) or 'authors' (the "
      f"constants of the authors' loss.py, which produced the published tables)."
    )
  if cls and fidelity != "authors":
    raise ValueError(
      f"{name!r} is a class of the authors' loss.py and computes what it computes (fidelity='authors'); "
      f"for the paper's formulas use get({cls.loss!r}, fidelity={fidelity!r})."
    )
  return fidelity


def fidelity_params(name: str, fidelity: str | None = None) -> dict[str, Any]:
  """The hyperparameters that `fidelity` sets for loss `name` (before any value given to `get`).

  'paper': {} (aplx's defaults are the paper's formulas). 'authors': every option of
  `AUTHORS_LOSS_OPTIONS` (`log_zero` = log(1e-4), `min_prob` = 1e-7, `halved`, `detach_focal_factor`,
  `authors_normalizer`) that the loss or one of its terms accepts, and for a class name of the authors'
  `loss.py` its own constructor defaults where they differ (FocalLoss: gamma = 0; NLNL: min_prob = 1e-5).
  A class name means 'authors' (None); an aplx name means 'paper' (None).

  Example:
    >>> from aplx import losses
    >>> losses.fidelity_params("nce+mae", "authors")
    {'halved': True}
  """
  parts = _parts(name)
  if _fidelity(name, fidelity) == "paper":
    return {}
  accepted = _defaults(parts)
  out = {k: v for k, v in _authors.AUTHORS_LOSS_OPTIONS.items() if k in accepted}
  cls = _authors_class(name)
  if cls:
    out.update(cls.defaults)
  return out


def info(name: str, *, fidelity: str | None = None) -> LossInfo:
  """Kind (active/passive), key requirement, parameters (with the defaults under `fidelity`) and
  reference of a registered name, an 'a+b' pair or a class name of the authors' loss.py.

  Example:
    >>> from aplx import losses
    >>> losses.info("nce+rce").kind
    'active+passive'
    >>> losses.info("nce+mae").params
    {'alpha': 1.0, 'beta': 1.0, 'halved': False}
    >>> losses.info("NCEandMAE").params
    {'alpha': 1.0, 'beta': 1.0, 'halved': True}
  """
  parts = _parts(name)
  canon = "+".join(parts)
  fns = [_BASE[p][0] for p in parts]
  params = {**_defaults(parts), **fidelity_params(name, fidelity)}
  if len(parts) == 1:
    ref = _BASE[canon][1]
  else:
    ref = _PAIRS.get(canon, "Ma et al. 2020 Eq. 6 (alpha * first + beta * second)")
  return LossInfo(
    name=canon,
    kind="+".join(fn.kind for fn in fns),
    needs_key=any(fn.needs_key for fn in fns),
    params=params,
    reference=ref,
    soft_labels=all(fn.soft_labels for fn in fns),
    batch_level=any(fn.batch_level for fn in fns),
  )


# ----------------------------------------------------------------------------------------------------
# Loss: what `get` returns
# ----------------------------------------------------------------------------------------------------


def _freeze(value) -> Any:
  """A hashable stand-in for a hyperparameter value, equal for equal values (arrays: by content)."""
  if value is None or isinstance(value, (bool, int, float, complex, str)):
    return value
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, (tuple, list)):
    return (type(value).__name__,) + tuple(_freeze(v) for v in value)
  if isinstance(value, (np.ndarray, jax.Array)) and not isinstance(value, jax.core.Tracer):
    a = np.asarray(value)
    return ("array", a.dtype.str, a.shape, a.tobytes())
  return ("object", id(value))  # Anything else (a traced value): equal only to itself.


class Loss:
  """A loss from `aplx.losses.get`: `loss_fn(logits, labels, axis=-1, where=None, *, <params>)`.

  Every hyperparameter (a pair's weights and both terms' parameters) is in `params`, in the signature
  with its value, and can be passed to a call to override it. Equal when built from equal arguments
  (hashable, so it can be a static argument of `jax.jit` without a recompile), and picklable.
  """

  def __init__(self, name: str, params: dict[str, Any], note: str = ""):
    self._parts = name.split("+")
    self._fns = tuple(_BASE[p][0] for p in self._parts)
    self._accepted = tuple(frozenset(_kw_params(fn)) for fn in self._fns)
    self._params = dict(params)
    self._note = note
    meta = info(name)
    self.name = name
    self.kind = meta.kind
    self.needs_key = meta.needs_key
    self.soft_labels = meta.soft_labels
    self.batch_level = meta.batch_level
    self.reference = meta.reference
    self.__name__ = self.__qualname__ = name.replace("+", "_plus_").replace("-", "_")
    self.__doc__ = self._doc()
    self.__signature__ = self._signature()

  @property
  def params(self) -> dict[str, Any]:
    """Every hyperparameter and its value (a copy)."""
    return dict(self._params)

  def __call__(self, logits, labels, axis=-1, where=None, **kwargs) -> jax.Array:
    key = kwargs.pop("key", None) if self.needs_key else None
    unknown = sorted(set(kwargs) - set(self._params))
    if unknown:
      raise TypeError(
        f"aplx.losses {self.name!r}: unknown keyword argument(s) {unknown}; it accepts the "
        f"hyperparameters {list(self._params)}, axis, where{', key' if self.needs_key else ''}."
      )
    hp = {**self._params, **kwargs}
    if len(self._fns) == 1:
      scale = hp.pop("scale")
      if kwargs.get("scale") is not None:
        _base._check_weights(f"get({self.name!r})", scale=scale)
      extra = {"key": key} if self.needs_key else {}
      value = self._fns[0](logits, labels, axis=axis, where=where, **hp, **extra)
      return value if _base._is_static(scale) and float(scale) == 1.0 else scale * value
    alpha, beta = hp.pop("alpha"), hp.pop("beta")
    terms = [
      functools.partial(fn, **{k: v for k, v in hp.items() if k in acc})
      for fn, acc in zip(self._fns, self._accepted)
    ]
    return _composition.apl(*terms, alpha=alpha, beta=beta)(logits, labels, axis, where, key=key)

  def _key(self):
    return (self.name, tuple((k, _freeze(v)) for k, v in sorted(self._params.items())))

  def __eq__(self, other):
    return isinstance(other, Loss) and self._key() == other._key()

  def __hash__(self):
    return hash(self._key())

  def __reduce__(self):
    return (_rebuild, (self.name, self._params, self._note))

  def __repr__(self):
    args = "".join(f", {k}={v!r}" for k, v in self._params.items())
    return f"aplx.losses.get({self.name!r}{args})"

  def _signature(self) -> inspect.Signature:
    pos, kw = inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY
    return inspect.Signature(
      [inspect.Parameter("logits", pos), inspect.Parameter("labels", pos)]
      + [inspect.Parameter("axis", pos, default=-1), inspect.Parameter("where", pos, default=None)]
      + [inspect.Parameter(k, kw, default=v) for k, v in self._params.items()]
      + ([inspect.Parameter("key", kw)] if self.needs_key else [])
    )

  def _doc(self) -> str:
    bound = (
      f"Returned by {self!r}{self._note}: these values are the keyword defaults; pass one to a call "
      "to override it."
    )
    if len(self._fns) == 1:
      return (inspect.getdoc(self._fns[0]) or "") + f"\n\n{bound} `scale` multiplies the loss.\n"
    first, second = self._parts
    soft = "supported (both terms take them)" if self.soft_labels else "not supported (a term does not)"
    key_arg = "\n  key: a PRNG key, passed to the term(s) that need one." if self.needs_key else ""
    return f"""alpha * {first} + beta * {second}: the Active Passive Loss of Ma et al. 2020, Eq. (6).

Kind {self.kind}; {self.reference}. Soft labels: {soft}.

Args:
  logits: [..., K] float scores (the class axis / axes given by `axis`).
  labels: [...] integer class ids{", or [..., K] probabilities" if self.soft_labels else ""}.
  axis: the class axis of `logits` (an int, a tuple of axes flattened in that order, or None).
  where: optional bool mask [...]; False entries give 0 loss and exactly 0 gradient.{key_arg}
  alpha, beta: the weights of the two terms (>= 0).
  every other keyword: a hyperparameter of the term(s) that take it (below).

Returns:
  [...] per-example loss, float32 (float64 for float64 logits).

{first}: {_summary(self._fns[0])}
{second}: {_summary(self._fns[1])}

{bound}
"""


def _summary(fn) -> str:
  return (inspect.getdoc(fn) or fn.__name__).splitlines()[0]


def _rebuild(name: str, params: dict[str, Any], note: str = "") -> Loss:
  loss = get(name, **params)
  if note:
    loss = Loss(loss.name, loss.params, note)
  return loss


# ----------------------------------------------------------------------------------------------------
# get
# ----------------------------------------------------------------------------------------------------


def _reject_call_args(params: dict[str, Any], label: str) -> None:
  for arg in _CALL_ARGS:
    if arg in params:
      raise TypeError(
        f"{label}: `{arg}` is an argument of each call, not a hyperparameter to bind: pass it to the "
        f"returned function, loss_fn(logits, labels, {arg}=...)."
      )


def _from_authors_class(name: str, cls: _authors.AuthorsClass, params: dict[str, Any]) -> dict[str, Any]:
  """The official class's constructor arguments as aplx parameters (renamed, ignored, refused)."""
  label = f"get({name!r})"
  out = {}
  for k, v in params.items():
    if k in cls.refused:
      raise TypeError(f"{label}: `{k}` is not taken: {cls.refused[k]}.")
    if k in cls.ignored:
      if not (_base._is_static(v) and float(v) == 1.0):
        warnings.warn(
          f"{label}: the authors' {name} ignores `{k}` (its value {v!r} never reaches the loss); aplx "
          f"does the same. For a weighted pair use get({cls.loss!r}, {k}=..., fidelity='authors').",
          UserWarning,
          stacklevel=3,
        )
      continue
    out[cls.renamed.get(k, k)] = v
  return out


def get(name: str, *, fidelity: str | None = None, **params: Any) -> Loss:
  """Returns loss_fn(logits, labels) for a name, hyperparameters bound.

  Single names take their own parameters (`get('gce', q=0.7)`, `get('rce', log_zero=-4.0)`) and
  `scale` (default 1), a constant factor, as the authors' single-loss classes have it
  (`get('nce', scale=10.0)`). Pairs 'a+b' compute alpha * a + beta * b; `alpha` and `beta` are the
  pair weights and every other parameter goes to each term that accepts it
  (`get('nfl+rce', alpha=1, beta=1, gamma=0.5, log_zero=-4.0)`).

  fidelity: 'paper' (default for aplx names) gives the paper's formulas; 'authors' gives the
  constants of the authors' PyTorch `loss.py`, which produced the published tables: RCE's
  A = log(1e-4) instead of -4, p clamped at 1e-7 in RCE / GCE / NGCE, MAE = 1 - p_y (half the paper's),
  no gradient through focal factors, NRCE's (K - 1) / 4 factor (`fidelity_params(name, 'authors')`).
  The class names of that `loss.py` are accepted too and imply 'authors', so a port is one line:
  `NCEandRCE(alpha=1, beta=1, num_classes=10)` -> `get('NCEandRCE', alpha=1, beta=1)` (their
  constructor arguments; `num_classes` is read from the logits, `ln_neg` is `num_negatives`; FocalLoss
  and NormalizedFocalLoss default to gamma = 0 as there; GCEandMAE / GCEandRCE ignore alpha and
  GCEandNCE alpha and beta, as there). Values given here override the fidelity's.

  The result is a `Loss`: `loss_fn(logits, labels, axis=-1, where=None, *, <hyperparameters>)`.
  `inspect.signature` and `.params` list every hyperparameter (a pair's terms' too) with its value,
  and any of them can be passed to a call to override it; an unknown keyword raises a TypeError
  naming the accepted ones. `axis` and `where` (and `key` for NLNL) are per-call arguments and cannot
  be bound here. It carries `name`, `kind` ('active', 'passive', e.g. 'active+passive' for APL),
  `needs_key` (if True call it as loss_fn(logits, labels, key=key)), `soft_labels`, `batch_level`,
  `params` and `reference` (also `info(name)`). Two results of `get` with equal arguments are equal and
  hash equal (a static `jax.jit` argument does not recompile), and they pickle.

  Unknown names raise ValueError listing the valid ones; parameters that no term accepts raise
  TypeError; invalid values raise ValueError now, not at the first step.

  Args:
    name: a name of `names()`, an 'a+b' pair of two single names, or an authors' class name
      (`authors_class_names()`).
    fidelity: 'paper', 'authors', or None (class names: 'authors'; other names: 'paper').
    **params: hyperparameters.

  Returns:
    A `Loss`, called as loss_fn(logits [..., K], labels [...]) -> [...] per-example losses.

  Example:
    >>> import jax.numpy as jnp
    >>> from aplx import losses
    >>> jnp.set_printoptions(precision=4)
    >>> logits, labels = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), jnp.array([0, 2])
    >>> loss_fn = losses.get("nce+rce", alpha=1.0, beta=1.0)
    >>> print(loss_fn(logits, labels))
    [0.6556 3.5768]
    >>> print(loss_fn(logits, labels, beta=0.5, log_zero=-9.0))  # any hyperparameter, per call
    [0.7338 3.9708]
    >>> print(losses.get("NCEandRCE", alpha=1, beta=1)(logits, labels))  # the authors' NCEandRCE
    [1.4695 7.6828]
    >>> loss_fn == losses.get("nce+rce")
    True
  """
  parts = _parts(name)
  canon = "+".join(parts)
  fidelity = _fidelity(name, fidelity)
  label = f"get({name!r})"
  _reject_call_args(params, label)
  cls = _authors_class(name)
  note = ""
  if cls:
    params = _from_authors_class(name.strip(), cls, params)
    note = f" (the authors' {name.strip()})"
  defaults = {**_defaults(parts), **fidelity_params(name, fidelity)}
  if len(parts) == 1:
    accepted = _kw_params(_BASE[canon][0])
    unknown = sorted(set(params) - set(accepted) - {"scale"})
    if unknown:
      raise TypeError(f"{label}: unknown parameter(s) {unknown}; accepted: {sorted(accepted) or 'none'}.")
    _base._check_weights(label, scale=params.get("scale", 1.0))
  else:
    if "scale" in params:
      raise TypeError(f"{label}: a pair takes `alpha` and `beta` as its weights, not `scale`.")
    unused = sorted(set(params) - set(defaults))
    if unused:
      raise TypeError(
        f"{label}: parameter(s) {unused} are not accepted by {parts[0]!r} or {parts[1]!r}; "
        f"accepted: {sorted(defaults)}."
      )
    _base._check_weights("apl", alpha=params.get("alpha", 1.0), beta=params.get("beta", 1.0))
  loss = Loss(canon, {**defaults, **params}, note)
  _eager_check(loss)
  return loss


def _eager_check(fn: Loss) -> None:
  """Traces once on a tiny abstract input so bad hyperparameters fail in `get`, not in training.

  The stand-in input has K = 2 classes; checks that depend on the real K (a clamp times K, a
  per-class weight vector's length) are skipped here and run on the first real call.
  """
  z = jax.ShapeDtypeStruct((1, 2), jnp.float32)
  y = jax.ShapeDtypeStruct((1,), jnp.int32)
  kw = {"key": jax.random.key(0)} if fn.needs_key else {}
  with _base._probing():
    jax.eval_shape(lambda a, b: fn(a, b, **kw), z, y)
