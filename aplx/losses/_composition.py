"""Composition: `normalize` (Eq. 1 for any loss), `apl` (Eq. 6), and the name registry `get`."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp

from aplx.losses import _base, _beyond, _classic, _normalized

LossFn = Callable[..., jax.Array]


# ----------------------------------------------------------------------------------------------------
# normalize (Eq. 1) and apl (Eq. 6)
# ----------------------------------------------------------------------------------------------------


def normalize(loss_fn: LossFn) -> LossFn:
  """Eq. (1) for any loss: L_norm(f(x), y) = L(f(x), y) / sum_{j=1..K} L(f(x), j).

  Works for any `loss_fn(logits, labels, **kw) -> [...]` written for integer labels and a last class
  axis; keyword arguments (hyperparameters, `key`) are passed through to every evaluation. The
  returned function also takes `axis` and `where` (it moves the class axis and masks itself, so
  `loss_fn` need not support them) and soft labels q [..., K], for which it returns the expectation
  of Eq. (1) over y ~ q: sum_k q_k L(f(x), k) / sum_j L(f(x), j) (only integer labels reach
  `loss_fn`, so this works for every loss).

  Cost: K evaluations of `loss_fn` (vmapped over the candidate label), so K times the time and
  an extra [K, ..., K]-sized intermediate; prefer the closed forms (`nce`, `nfl`, `ngce`, `nmae`,
  `nrce`), which the tests check against this function.

  Args:
    loss_fn: a per-example loss with the aplx signature. Its `kind` and `needs_key` attributes are
      carried over.

  Returns:
    The normalized loss, `fn(logits, labels, *, axis=-1, where=None, **kw)`.

  Example:
    >>> normalize(cross_entropy)(logits, labels)  # == nce(logits, labels)

  Reference: Ma et al. 2020, Eq. (1).
  """

  def normalized(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    axis: int = -1,
    where: jax.typing.ArrayLike | None = None,
    **kwargs,
  ) -> jax.Array:
    z, labels_v, k, where = _base._validate(
      "normalize", logits, labels, axis=axis, where=where, soft_labels=True
    )
    soft = jnp.issubdtype(labels_v.dtype, jnp.floating)
    batch_shape = z.shape[:-1]
    dtype = jnp.int32 if soft else labels_v.dtype
    cand = jnp.broadcast_to(
      jnp.arange(k, dtype=dtype).reshape((k,) + (1,) * len(batch_shape)), (k,) + batch_shape
    )
    all_labels = jax.vmap(lambda j: loss_fn(z, j, **kwargs))(cand)  # [K, ...]
    all_labels = jnp.moveaxis(all_labels, 0, -1)  # [..., K]
    num = jnp.sum(labels_v * all_labels, axis=-1) if soft else _base._gather(all_labels, labels_v)
    return _base._masked(num / jnp.sum(all_labels, axis=-1), where)

  name = getattr(loss_fn, "__name__", "loss")
  normalized.__name__ = f"normalized_{name}"
  normalized.__doc__ = f"Eq. (1) normalization of `{name}` (K evaluations); see aplx.losses.normalize."
  normalized.kind = getattr(loss_fn, "kind", "unknown")
  normalized.needs_key = _needs_key(loss_fn)
  normalized.soft_labels = True
  return normalized


def _needs_key(fn: LossFn) -> bool:
  """`fn.needs_key`, looking through functools.partial (`partial(nlnl, ...)` has no attributes)."""
  while isinstance(fn, functools.partial) and not hasattr(fn, "needs_key"):
    fn = fn.func
  return bool(getattr(fn, "needs_key", False))


def apl(active: LossFn, passive: LossFn, *, alpha: float = 1.0, beta: float = 1.0) -> LossFn:
  """Active Passive Loss, L_APL = alpha L_active + beta L_passive  (Eq. 6).

  Bind the components' hyperparameters first (`functools.partial(nfl, gamma=0.5)`), or use
  `get('nfl+rce', gamma=0.5, ...)`, which does it for you. If a component needs a PRNG key
  (`needs_key`), the returned function takes `key=` and passes it on (split if both need one).
  `axis` and `where` are handled here (the components see a last class axis and no mask, so any
  loss works); soft labels are passed on to both components, which raise if they do not take them.

  Args:
    active: loss_fn(logits, labels) -> [...], the active term (e.g. `nce`).
    passive: loss_fn(logits, labels) -> [...], the passive term (e.g. `rce`).
    alpha: weight of the active term, >= 0 (Python number or array; see the note on traced values
      in `aplx.losses`).
    beta: weight of the passive term, >= 0.

  Returns:
    loss_fn(logits, labels, *, key=None, axis=-1, where=None) -> [...], with `kind` =
    '<active kind>+<passive kind>'.

  Example:
    >>> loss = apl(nce, functools.partial(rce, log_zero=-4.0), alpha=1.0, beta=1.0)

  Reference: Ma et al. 2020, Eq. (6).
  """
  _base._check_weights("apl", alpha=alpha, beta=beta)
  need_a = _needs_key(active)
  need_p = _needs_key(passive)

  def combined(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    key: jax.Array | None = None,
    axis: int = -1,
    where: jax.typing.ArrayLike | None = None,
  ) -> jax.Array:
    kw_a, kw_p = {}, {}
    if need_a or need_p:
      if key is None:
        raise ValueError("apl: a component needs a PRNG key; call loss_fn(logits, labels, key=...).")
      if need_a and need_p:
        ka, kp = jax.random.split(key)
        kw_a, kw_p = {"key": ka}, {"key": kp}
      elif need_a:
        kw_a = {"key": key}
      else:
        kw_p = {"key": key}
    if axis != -1 or where is not None:
      logits, labels, _, where = _base._validate(
        "apl", logits, labels, axis=axis, where=where, soft_labels=True
      )
    value = alpha * active(logits, labels, **kw_a) + beta * passive(logits, labels, **kw_p)
    return _base._masked(value, where)

  kind_a = getattr(active, "kind", "unknown")
  kind_p = getattr(passive, "kind", "unknown")
  combined.__name__ = f"apl_{getattr(active, '__name__', 'active')}_{getattr(passive, '__name__', 'passive')}"
  combined.kind = f"{kind_a}+{kind_p}"
  combined.needs_key = need_a or need_p
  return combined


# ----------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------

_BASE: dict[str, tuple[LossFn, str]] = {
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


@dataclasses.dataclass(frozen=True)
class LossInfo:
  """What the registry knows about a loss name."""

  name: str
  kind: str  # 'active', 'passive', or '<kind>+<kind>' for a pair (APL = 'active+passive')
  needs_key: bool  # call as loss_fn(logits, labels, key=...) when True
  params: dict[str, Any]  # parameters `get` accepts -> default (single losses: also `scale`)
  reference: str
  soft_labels: bool = False  # accepts class probabilities [..., K] as labels (pairs: both terms)


def _canonical(name: str) -> str:
  if not isinstance(name, str):
    raise TypeError(f"loss name must be a string, got {type(name).__name__}.")
  n = name.strip().lower().replace("_", "-").replace(" ", "")
  parts = [_ALIASES.get(p, p) for p in n.split("+")]
  return "+".join(parts)


# Keyword arguments of every loss that belong to the call (data), not to the hyperparameters `get` binds.
_CALL_ARGS = ("key", "axis", "where")


def _kw_params(fn: LossFn) -> dict[str, Any]:
  sig = inspect.signature(fn)
  return {
    p.name: p.default
    for p in sig.parameters.values()
    if p.kind == inspect.Parameter.KEYWORD_ONLY and p.name not in _CALL_ARGS
  }


def names() -> tuple[str, ...]:
  """All registered loss names: the single losses, then the named pairs."""
  return tuple(_BASE) + tuple(_PAIRS)


def _parts(name: str) -> list[str]:
  canon = _canonical(name)
  parts = canon.split("+")
  if len(parts) > 2 or any(p not in _BASE for p in parts):
    raise ValueError(
      f"Unknown loss {name!r}. Valid names: {', '.join(names())} (or any 'a+b' of the single "
      f"losses, weighted by alpha and beta)."
    )
  return parts


def info(name: str) -> LossInfo:
  """Kind (active/passive), key requirement, parameters and reference of a registered name."""
  parts = _parts(name)
  canon = "+".join(parts)
  if len(parts) == 1:
    fn, ref = _BASE[canon]
    return LossInfo(canon, fn.kind, fn.needs_key, {**_kw_params(fn), "scale": 1.0}, ref, fn.soft_labels)
  fns = [_BASE[p][0] for p in parts]
  params: dict[str, Any] = {"alpha": 1.0, "beta": 1.0}
  for fn in fns:
    for k, v in _kw_params(fn).items():
      if k not in ("alpha", "beta"):
        params.setdefault(k, v)
  ref = _PAIRS.get(canon, "Ma et al. 2020 Eq. 6 (alpha * first + beta * second)")
  kind = "+".join(fn.kind for fn in fns)
  soft = all(fn.soft_labels for fn in fns)
  return LossInfo(canon, kind, any(fn.needs_key for fn in fns), params, ref, soft)


def _reject_call_args(params: dict[str, Any], label: str) -> None:
  for arg in _CALL_ARGS:
    if arg in params:
      raise TypeError(
        f"{label}: `{arg}` is an argument of each call, not a hyperparameter to bind: pass it to the "
        f"returned function, loss_fn(logits, labels, {arg}=...)."
      )


def _bind(fn: LossFn, params: dict[str, Any], label: str, scale=None) -> LossFn:
  """`fn` with `params` bound as new defaults (partial semantics; the signature and docstring kept).

  Times `scale` if given. Keywords passed to the call override the bound ones, as with
  functools.partial.
  """
  _reject_call_args(params, label)
  accepted = _kw_params(fn)
  unknown = sorted(set(params) - set(accepted))
  if unknown:
    raise TypeError(f"{label}: unknown parameter(s) {unknown}; accepted: {sorted(accepted) or 'none'}.")

  @functools.wraps(fn)
  def bound(logits, labels, **kw):
    value = fn(logits, labels, **{**params, **kw})
    return value if scale is None else scale * value

  sig = inspect.signature(fn)
  bound.__signature__ = sig.replace(
    parameters=[p.replace(default=params[p.name]) if p.name in params else p for p in sig.parameters.values()]
  )
  return bound


def _pair(canon: str, comps: list[LossFn], hyper: dict[str, Any], meta: LossInfo) -> LossFn:
  """One closure for alpha * comps[0] + beta * comps[1]; `hyper` (alpha, beta, the bound component
  parameters) are its keyword defaults and can be overridden per call."""
  kw_only = inspect.Parameter.KEYWORD_ONLY
  positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
  call_params = [inspect.Parameter("key", kw_only, default=None)] if meta.needs_key else []
  sig = inspect.Signature(
    [inspect.Parameter("logits", positional), inspect.Parameter("labels", positional)]
    + [inspect.Parameter(k, kw_only, default=v) for k, v in hyper.items()]
    + call_params
    + [inspect.Parameter("axis", kw_only, default=-1), inspect.Parameter("where", kw_only, default=None)]
  )
  accepted = [_kw_params(c) for c in comps]

  def loss_fn(logits, labels, **kw):
    args = sig.bind(logits, labels, **kw)  # TypeError for a keyword not in the signature
    args.apply_defaults()
    a = dict(args.arguments)
    logits, labels, alpha, beta = a.pop("logits"), a.pop("labels"), a.pop("alpha"), a.pop("beta")
    call = {k: a.pop(k) for k in _CALL_ARGS if k in a}
    first, second = (
      functools.partial(c, **{k: v for k, v in a.items() if k in acc}) for c, acc in zip(comps, accepted)
    )
    return apl(first, second, alpha=alpha, beta=beta)(logits, labels, **call)

  first, second = canon.split("+")
  soft = (
    "supported (both terms take them)" if meta.soft_labels else "not supported (a term does not take them)"
  )
  loss_fn.__signature__ = sig
  loss_fn.__name__ = loss_fn.__qualname__ = canon.replace("+", "_plus_").replace("-", "_")
  loss_fn.__doc__ = f"""alpha * {first} + beta * {second} (Eq. 6): aplx.losses.get({canon!r}).

  Kind {meta.kind}; {meta.reference}. The keyword defaults shown in the signature are the values
  given to `get` (alpha, beta and the components' hyperparameters); passing one overrides it.
  Soft labels: {soft}.

  Args:
    logits: [..., K] float scores.
    labels: [...] integer class ids{", or [..., K] probabilities" if meta.soft_labels else ""}.
    key: a PRNG key, passed to the term(s) that need one (only when `needs_key`).
    axis: the class axis of `logits`.
    where: optional bool mask [...]; False entries give 0 loss and exactly 0 gradient.

  Returns:
    [...] per-example loss.

  {first}: {_summary(comps[0])}
  {second}: {_summary(comps[1])}
  """
  return loss_fn


def _summary(fn: LossFn) -> str:
  return (inspect.getdoc(fn) or fn.__name__).splitlines()[0]


def get(name: str, **params: Any) -> LossFn:
  """Returns loss_fn(logits, labels) for a paper name, hyperparameters bound.

  Single names take their own parameters (`get('gce', q=0.7)`, `get('rce', log_zero=-4.0)`) and
  `scale` (default 1), a constant factor, as the authors' single-loss classes have it
  (`get('nce', scale=10.0)`). Pairs 'a+b' compute alpha * a + beta * b; `alpha` and `beta` are the
  pair weights and every other parameter goes to each component that accepts it
  (`get('nfl+rce', alpha=1, beta=1, gamma=0.5, log_zero=-4.0)`). Unknown names raise ValueError
  listing the valid ones; parameters that no component accepts raise TypeError; invalid values raise
  ValueError now, not at the first step.

  The result behaves like `functools.partial`: `inspect.signature` shows
  `(logits, labels, *, <hyperparameters with the bound values>, [key,] axis=-1, where=None)`, help()
  shows the loss's docstring, and a keyword passed to the call overrides the bound value. `axis` and
  `where` (and `key` for NLNL) are per-call arguments and cannot be bound here. For backward
  compatibility it carries `name`, `kind` ('active', 'passive', or e.g. 'active+passive' for APL),
  `needs_key` (if True call it as loss_fn(logits, labels, key=key)), `params` and `reference`; the
  same metadata is `info(name)`.

  Example:
    >>> loss_fn = aplx.losses.get('nce+rce', alpha=1.0, beta=1.0)
    >>> loss = loss_fn(logits, labels).mean()
    >>> loss = loss_fn(logits_nchw, labels_nhw, axis=1, where=labels_nhw != 255).sum() / n_valid
  """
  parts = _parts(name)
  canon = "+".join(parts)
  meta = info(canon)
  label = f"get({name!r})"
  _reject_call_args(params, label)
  if len(parts) == 1:
    scale = params.pop("scale", 1.0)
    _base._check_weights(label, scale=scale)
    unit = _base._is_static(scale) and float(scale) == 1.0
    fn = _bind(_BASE[canon][0], params, label, scale=None if unit else scale)
    bound_text = ", ".join(f"{k}={v!r}" for k, v in params.items())
    fn.__doc__ = (fn.__doc__ or "") + (
      f"\n\n  Returned by aplx.losses.get({canon!r}{', ' if params else ''}{bound_text}"
      f"{'' if unit else f', scale={scale!r}'}): the bound values are the keyword defaults"
      f"{'' if unit else f' and the loss is multiplied by {scale!r}'}.\n"
    )
    if not unit:
      params = {"scale": scale, **params}
  else:
    if "scale" in params:
      raise TypeError(f"{label}: a pair takes `alpha` and `beta` as its weights, not `scale`.")
    alpha = params.pop("alpha", 1.0)
    beta = params.pop("beta", 1.0)
    comps = [_BASE[p][0] for p in parts]
    accepted = set().union(*[set(_kw_params(c)) for c in comps])
    unused = sorted(set(params) - accepted)
    if unused:
      raise TypeError(
        f"{label}: parameter(s) {unused} are not accepted by {parts[0]!r} or "
        f"{parts[1]!r}; accepted: {sorted(meta.params)}."
      )
    _base._check_weights("apl", alpha=alpha, beta=beta)
    params = {"alpha": alpha, "beta": beta, **params}
    fn = _pair(canon, comps, params, meta)
  _eager_check(fn, meta)
  fn.name = canon
  fn.kind = meta.kind
  fn.needs_key = meta.needs_key
  fn.soft_labels = meta.soft_labels
  fn.params = dict(params)
  fn.reference = meta.reference
  return fn


def _eager_check(fn: LossFn, meta: LossInfo) -> None:
  """Traces once on a tiny abstract input so bad hyperparameters fail in `get`, not in training.

  The stand-in input has K = 2 classes; checks that depend on the real K (a clamp times K, a
  per-class weight vector's length) are skipped here and run on the first real call.
  """
  z = jax.ShapeDtypeStruct((1, 2), jnp.float32)
  y = jax.ShapeDtypeStruct((1,), jnp.int32)
  kw = {"key": jax.random.key(0)} if meta.needs_key else {}
  with _base._probing():
    jax.eval_shape(lambda a, b: fn(a, b, **kw), z, y)
