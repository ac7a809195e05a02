"""Shared pieces of the per-dataset configs: the config argument parser and the base ConfigDict.

A config file's argument selects the paper setting, e.g.
`--config experiments/configs/cifar10.py:loss=nce+rce,noise=sym,rate=0.8,seed=1`. Every field can then be
overridden on the command line (`--config.optim.lr=0.05`, `--config.loss.params.beta=10`,
`--config.model.kwargs.dtype=bfloat16`): `loss.params` holds every hyperparameter of the loss (the
setting's values, aplx's defaults for the rest) and `model.kwargs` the compute dtype.
`override` applies such flags as `experiments.main` does (`experiments.sweep` uses it).
"""

from collections.abc import Mapping
import importlib.util

from absl import flags
import ml_collections
from ml_collections import config_flags

from aplx import losses, rundir
from aplx import noise as noise_lib
from aplx.train import config as train_config

# Keys the config argument understands: (type, default). None means "unset": the config's own value
# (all training images, the setting's epochs).
ARG_SPEC = {
  "loss": (str, "nce+rce"),
  "noise": (str, "sym"),
  "rate": (float, 0.0),
  "seed": (int, 0),
  "noise_seed": (int, None),
  "subset": (int, None),
  "epochs": (int, None),
  "fidelity": (str, "authors"),
}
ARG_DEFAULTS = {k: default for k, (_, default) in ARG_SPEC.items()}
NOISE_TYPES = ("none", "sym", "asym", "pairflip", "idn", "human")


def load_config_file(path: str):
  """The module of a config file (as ml_collections' config_flags loads it)."""
  spec = importlib.util.spec_from_file_location(f"_aplx_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def parse_arg(arg: str | None, **defaults) -> dict:
  """Parses 'loss=nce+rce,noise=sym,rate=0.8' into a dict, with clear errors for bad keys and values."""
  out = dict(ARG_DEFAULTS, **defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    if not sep or key not in ARG_DEFAULTS:
      raise ValueError(
        f"Bad config argument {item!r} in {arg!r}: expected comma-separated key=value with "
        f"keys {sorted(ARG_DEFAULTS)}, e.g. 'loss=nce+rce,noise=sym,rate=0.8'."
      )
    kind = ARG_SPEC[key][0]
    try:
      out[key] = kind(value)
    except ValueError:
      raise ValueError(f"Config argument {key}={value!r} must be a {kind.__name__}.") from None
  if out["noise_seed"] is not None and out["noise_seed"] < 0:
    raise ValueError(
      f"noise_seed={out['noise_seed']}: a seed is an integer >= 0 (leave it out: the run's seed)."
    )
  for key in ("subset", "epochs"):
    if out[key] is not None and out[key] < 1:
      raise ValueError(
        f"{key}={out[key]}: must be >= 1 (leave {key} out for the setting's own value; 0 does not mean "
        "'default')."
      )
  if out["noise"] not in NOISE_TYPES and not out["noise"].startswith("human:"):
    raise ValueError(f"noise={out['noise']!r}: use one of {NOISE_TYPES} (or human:<field> for CIFAR-N).")
  if not 0.0 <= out["rate"] <= 1.0:
    raise ValueError(f"rate={out['rate']}: a noise rate must be in [0, 1].")
  if out["fidelity"] not in ("authors", "paper"):
    raise ValueError(
      f"fidelity={out['fidelity']!r}: use 'authors' (reproduce the published runs) or "
      "'paper' (the paper's stated formulas and hyperparameters)."
    )
  return out


# Model options every config has: those every aplx model takes (the compute dtype; parameters stay
# float32). Options of some models only (the CNNs' `kernels`) would break a --config.model.name
# override, so they are set in a config file.
MODEL_OPTIONS = ("dtype",)
# Loss parameters whose default is None (off) and that take a number when set: float fields, so that
# `--config.loss.params.min_prob=1e-7` parses. (NLNL's class_weight, an array, is set in a config file.)
NUMBER_OR_NONE_PARAMS = ("min_prob",)


def _every_loss_param(name: str, preset: Mapping) -> ml_collections.ConfigDict:
  """Every hyperparameter of loss `name`: `preset`'s value, else aplx's default (`rundir.loss_defaults`,
  also what `rundir.config_diff` takes for a parameter that an older config.json lacks)."""
  params = ml_collections.ConfigDict()
  for k, v in rundir.loss_defaults(name).items():
    typed = v is None and k in NUMBER_OR_NONE_PARAMS
    params[k] = ml_collections.FieldReference(None, field_type=float) if typed else v
  params.update(dict(preset))  # An int preset of a float field becomes a float.
  return params


def base_config(
  args: Mapping,
  *,
  dataset: str,
  model: str,
  epochs: int,
  batch_size: int,
  optim: Mapping,
  loss_params: Mapping,
) -> ml_collections.ConfigDict:
  """The ConfigDict every dataset config returns; per-dataset values come in as arguments."""
  c = ml_collections.ConfigDict()
  c.dataset = dataset
  if args["subset"] is not None:
    c.subset = args["subset"]
  c.seed = args["seed"]

  c.noise = ml_collections.ConfigDict()
  c.noise.type = args["noise"]
  c.noise.rate = args["rate"]
  # The noise draw's seed: the run's seed by default (the authors draw the noise from it), or its own
  # (`noise_seed=`), so that initialisation / batch-order seeds can vary over one fixed noise draw.
  c.noise.seed = args["seed"] if args["noise_seed"] is None else args["noise_seed"]
  c.noise.options = ml_collections.ConfigDict()

  c.loss = ml_collections.ConfigDict()
  c.loss.name = args["loss"]
  c.loss.params = _every_loss_param(args["loss"], loss_params)

  c.model = ml_collections.ConfigDict()
  c.model.name = model
  c.model.kwargs = ml_collections.ConfigDict(
    {k: v for k, v in rundir.model_defaults(model).items() if k in MODEL_OPTIONS}
  )

  c.optim = ml_collections.ConfigDict(dict(optim))
  c.epochs = args["epochs"] if args["epochs"] is not None else epochs
  c.batch_size = batch_size
  # The authors' PyTorch loaders keep the last partial batch of an epoch (drop_last=False); the paper
  # does not say. aplx's default, big_vision's, drops it.
  c.drop_remainder = args["fidelity"] == "paper"
  # Every other field at the trainer's default (one table, `aplx.train.DEFAULTS`, commented there): the
  # validation split (val_fraction, val_fold: `experiments.report --select val`, docs/training.md),
  # image_size and data_workers of streamed datasets, device_data, log_every_steps, keep_checkpoints,
  # max_steps, eval_batch_size, optim.l1, ...
  train_config.fill_defaults(c)
  return c


def missing_field(config: ml_collections.ConfigDict, dotted: str) -> str | None:
  """Why `config.<dotted>` does not exist (naming the fields that do), or None if it does."""
  node, walked = config, "config"
  for name in dotted.split("."):
    fields = list(node.keys()) if hasattr(node, "keys") else []
    if name not in fields:
      return f"{walked} has no field {name!r}; its fields are: {', '.join(sorted(fields)) or 'none'}."
    node, walked = node[name], f"{walked}.{name}"
  return None


def override(config: ml_collections.ConfigDict, overrides: Mapping[str, str]) -> ml_collections.ConfigDict:
  """`config` (changed in place, and locked) with `--config.<path>=<value>` applied for each item, as
  `experiments.main`'s --config flag applies them (ml_collections' parser: a value takes its field's
  type, '10' -> 10.0 for a float).

  Raises ValueError for a path that does not exist (naming the fields that do) or a value that its
  field's type rejects.
  """
  for path in overrides:
    missing = missing_field(config, path)
    if missing:
      raise ValueError(f"--config.{path}: {missing}")
  argv = ["override", *(f"--config.{k}={v}" for k, v in overrides.items())]
  holder = flags.FlagValues()
  config_flags.DEFINE_config_dict("config", config, flag_values=holder, lock_config=True, sys_argv=argv)
  try:
    holder(argv)
  except flags.Error as e:
    raise ValueError(str(e).strip().splitlines()[-1]) from None
  return holder.config


def loss_params(
  table: Mapping[str, Mapping], name: str, noise: str = "sym", asym: Mapping[str, Mapping] | None = None
) -> dict:
  """The configured hyperparameters of loss `name`; {} (aplx's defaults) for a loss not in the table.

  `asym` holds the few values the authors' asym/*.yaml set differently from sym/*.yaml (used for
  noise='asym'; sym/*.yaml for every other noise). Validating the name is left to
  `aplx.losses.get`, whose error lists every valid loss.
  """
  params = dict(table.get(name, {}))
  if noise == "asym":
    params.update((asym or {}).get(name, {}))
  return params


def fidelity_loss_params(loss: str, fidelity: str) -> dict:
  """The loss options for `fidelity` ('paper': aplx's defaults; 'authors': the authors' loss.py
  constants, `aplx.losses.AUTHORS_LOSS_OPTIONS`, that `loss` accepts), as `aplx.losses.get(loss,
  fidelity=...)` applies them."""
  try:
    return losses.fidelity_params(loss, fidelity)
  except ValueError:
    return {}  # Unknown name: aplx.losses.get reports it with the list of valid names.


def authors_noise_options(noise: str, dataset: str) -> dict:
  """`aplx.noise` options that reproduce the official `dataset.py` (`aplx.noise.authors_options`)."""
  return noise_lib.authors_options(noise, dataset)


# Ye et al. 2023 (ANL), official configs (Virusdoll/Active-Negative-Loss `config/<dataset>_anl_*.json`,
# transcribed in anl_hparams.csv): loss weights, the L1 penalty delta * sum |theta| over every parameter
# (`optim.l1`), and the optimiser ANL was run with: no weight decay (the penalty replaces it), no
# Nesterov, cosine to 0 (WebVision: the APL settings, weight decay 0). The repository has no WebVision
# ANL-FL config.
ANL_LOSSES = ("anl-ce", "anl-fl")
ANL = {
  "mnist": {"alpha": 1.0, "beta": 1.0, "l1": 1e-6},
  "cifar10": {"alpha": 5.0, "beta": 5.0, "l1": 5e-5},
  "cifar100": {"alpha": 10.0, "beta": 1.0, "l1": 5e-7, "model": "resnet34"},
  "webvision": {"alpha": 20.0, "beta": 1.0, "l1": 5e-6},
}


def apply_anl(config: ml_collections.ConfigDict, dataset: str) -> None:
  """Sets the ANL settings of `dataset` on `config` (a config whose loss is anl-ce or anl-fl)."""
  anl = ANL[dataset]
  config.loss.params.alpha = anl["alpha"]
  config.loss.params.beta = anl["beta"]
  if config.loss.name == "anl-fl":
    config.loss.params.gamma = 0.5
  config.optim.l1 = anl["l1"]
  config.optim.weight_decay = 0.0
  if config.optim.schedule == "cosine":
    config.optim.nesterov = False
    config.optim.eta_min = 0.0
  if "model" in anl:
    config.model.name = anl["model"]
