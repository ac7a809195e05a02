"""Shared pieces of the per-dataset configs: the config argument parser and the base ConfigDict.

A config file's argument selects the paper setting, e.g.
`--config experiments/configs/cifar10.py:loss=nce+rce,noise=sym,rate=0.8,seed=1`. Every field can then be
overridden on the command line (`--config.optim.lr=0.05`, `--config.loss.params.beta=10`).
"""

from collections.abc import Mapping

import ml_collections

from aplx import losses

# Keys the config argument understands, with their types and defaults.
ARG_DEFAULTS = {"loss": "nce+rce", "noise": "sym", "rate": 0.0, "seed": 0, "subset": 0, "epochs": 0,
                "fidelity": "authors"}
NOISE_TYPES = ("none", "sym", "asym", "pairflip", "idn", "human")


def parse_arg(arg: str | None, **defaults) -> dict:
  """Parses 'loss=nce+rce,noise=sym,rate=0.8' into a dict, with clear errors for bad keys and values."""
  out = dict(ARG_DEFAULTS, **defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    if not sep or key not in ARG_DEFAULTS:
      raise ValueError(f"Bad config argument {item!r} in {arg!r}: expected comma-separated key=value with "
                       f"keys {sorted(ARG_DEFAULTS)}, e.g. 'loss=nce+rce,noise=sym,rate=0.8'.")
    kind = type(ARG_DEFAULTS[key])
    try:
      out[key] = kind(value)
    except ValueError:
      raise ValueError(f"Config argument {key}={value!r} must be a {kind.__name__}.") from None
  if out["noise"] not in NOISE_TYPES and not out["noise"].startswith("human:"):
    raise ValueError(f"noise={out['noise']!r}: use one of {NOISE_TYPES} (or human:<field> for CIFAR-N).")
  if not 0.0 <= out["rate"] <= 1.0:
    raise ValueError(f"rate={out['rate']}: a noise rate must be in [0, 1].")
  if out["fidelity"] not in ("authors", "paper"):
    raise ValueError(f"fidelity={out['fidelity']!r}: use 'authors' (reproduce the published runs) or "
                     "'paper' (the paper's stated formulas and hyperparameters).")
  return out


def base_config(args: Mapping, *, dataset: str, model: str, epochs: int, batch_size: int,
                optim: Mapping, loss_params: Mapping) -> ml_collections.ConfigDict:
  """The ConfigDict every dataset config returns; per-dataset values come in as arguments."""
  c = ml_collections.ConfigDict()
  c.dataset = dataset
  c.data_dir = ml_collections.FieldReference(None, field_type=str)  # None: $APLX_DATA_DIR or TFDS's.
  c.subset = args["subset"] or ml_collections.FieldReference(None, field_type=int)
  c.seed = args["seed"]

  c.noise = ml_collections.ConfigDict()
  c.noise.type = args["noise"]
  c.noise.rate = args["rate"]
  c.noise.seed = args["seed"]  # The authors draw the noise from the run's seed.
  c.noise.options = ml_collections.ConfigDict()

  c.loss = ml_collections.ConfigDict()
  c.loss.name = args["loss"]
  c.loss.params = ml_collections.ConfigDict(dict(loss_params))

  c.model = ml_collections.ConfigDict()
  c.model.name = model
  c.model.kwargs = ml_collections.ConfigDict()

  c.optim = ml_collections.ConfigDict(dict(optim))
  c.epochs = args["epochs"] or epochs
  c.batch_size = batch_size
  # The authors' PyTorch loaders keep the last partial batch of an epoch (drop_last=False); the paper
  # does not say. aplx's default, big_vision's, drops it.
  c.drop_remainder = args["fidelity"] == "paper"
  c.eval_batch_size = 1000
  c.augment = True
  c.log_every_steps = 100
  c.keep_checkpoints = 2
  c.max_steps = ml_collections.FieldReference(None, field_type=int)  # Stop early (tests).
  return c


def loss_params(table: Mapping[str, Mapping], name: str) -> dict:
  """The configured hyperparameters of loss `name`; {} (aplx's defaults) for a loss not in the table.

  Validating the name is left to `aplx.losses.get`, whose error lists every valid loss.
  """
  return dict(table.get(name, {}))


# The authors' code (HanxunH/Active-Passive-Losses) differs from the paper's formulas in these loss
# options (docs/fidelity.md); with fidelity='authors' every loss gets those it accepts.
AUTHORS_LOSS_OPTIONS = {
    "halved": True,                    # MAE = 1 - p_y ("reduced MAE").
    "log_zero": -9.210340371976182,    # RCE's A = log(1e-4) (one-hot clamped to [1e-4, 1]).
    "min_prob": 1e-7,                  # p clamped to [1e-7, 1] in RCE, GCE, NGCE.
    "detach_focal_factor": True,       # No gradient through any (1 - p)^gamma factor in FL / NFL.
    "authors_normalizer": True,        # NRCE's operator-precedence normalizer.
}


def fidelity_loss_params(loss: str, fidelity: str) -> dict:
  """The loss options for `fidelity` ('paper': aplx's defaults, 'authors': AUTHORS_LOSS_OPTIONS)."""
  if fidelity == "paper":
    return {}
  try:
    accepted = losses.info(loss).params
  except ValueError:
    return {}  # Unknown name: aplx.losses.get reports it with the list of valid names.
  return {k: v for k, v in AUTHORS_LOSS_OPTIONS.items() if k in accepted}


def authors_noise_options(noise: str, dataset: str) -> dict:
  """`aplx.noise` options that reproduce the official `dataset.py` (docs/noise.md)."""
  if noise == "sym":
    return {"method": "exact", "authors_quota": True}
  if noise == "asym":
    return {"mnist": {"method": "transition"},
            "cifar10": {"method": "exact", "sequential": True},
            "cifar100": {"method": "transition", "group": "consecutive"}}.get(dataset, {})
  return {}
