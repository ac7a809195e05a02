"""The run directory: what a training run leaves in its workdir, written and read in one place.

  <workdir>/config.json     the run's config (`ConfigDict.to_json_best_effort`), written at start
  <workdir>/metrics.jsonl   one JSON object per finished epoch, appended only once that epoch's
                            checkpoint is committed; a torn last line (a run killed mid-write) is
                            ignored by `read_metrics` and dropped when the run resumes
  <workdir>/status.json     {"status": RUNNING | FINISHED | PREEMPTED | FAILED, "step", "epoch",
                            "time", "error"}: how the last process left the run
  <workdir>/checkpoints/    orbax checkpoints (aplx.train)
  <workdir>/tensorboard/    TensorBoard event files

`aplx.train` writes it; `experiments.sweep` and `experiments.report` read it. Paths go through
`etils.epath`, so a workdir may be local or a cloud bucket (`gs://...`).

Comparing config.json with the config a run is resumed (or swept) with, `config_diff`: a field that one
side lacks matches when the other side holds that field's default (`field_defaults`: the loss's
parameters, the model's options, the trainer's `aplx.train.DEFAULTS`). So fields added to the configs
later (every loss parameter in `loss.params`, `model.kwargs.dtype`, `val_fraction`, `optim.l1`) keep older
runs resumable and finished. No JAX import at module level (the defaults import `aplx.losses`,
`aplx.models` and `aplx.train.config` when needed).
"""

from __future__ import annotations

import inspect
import json
import time
from typing import Any

import numpy as np

from aplx import _deps

with _deps.extra("train", __name__):
  from etils import epath

RUNNING, FINISHED, PREEMPTED, FAILED = "running", "finished", "preempted", "failed"

# Exit status of `experiments.main` after a preemption (SIGTERM, or a multi-host preemption notice)
# whose checkpoint was committed: EX_TEMPFAIL, "try again". `experiments.sweep` treats it as
# interrupted and resumable, not failed.
PREEMPTED_EXIT_CODE = 75

# Config fields that may change between a run and its resumption without changing what it computes.
RESUMABLE_CHANGES = (
  "log_every_steps",
  "eval_batch_size",
  "data_dir",
  "max_steps",
  "keep_checkpoints",
  "data_workers",  # Worker processes do not change the batches (data.train_batches).
  "device_data",  # Batches made on the devices are the host's (aplx.data.device; bitwise on CPU).
)


def path(workdir: str | epath.Path) -> epath.Path:
  """The workdir as an `epath.Path` (local paths made absolute; URIs such as gs:// kept)."""
  p = epath.Path(workdir)
  return p if "://" in str(workdir) else epath.Path(p.expanduser().resolve())


# ---------------------------------------------------------------------------------------------------
# metrics.jsonl
# ---------------------------------------------------------------------------------------------------


def read_metrics(workdir) -> list[dict]:
  """The per-epoch records, in order. A torn or otherwise unreadable line ends the log there (a run
  killed while writing leaves at most its last line torn)."""
  p = path(workdir) / "metrics.jsonl"
  if not p.exists():
    return []
  records = []
  for line in p.read_text().splitlines():
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      break
  return records


def write_metrics(workdir, records: list[dict]) -> None:
  """Replaces metrics.jsonl with `records` (write to a temporary file, then rename)."""
  p = path(workdir) / "metrics.jsonl"
  tmp = p.parent / (p.name + ".tmp")
  tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
  tmp.replace(p)


def append_metrics(workdir, record: dict) -> None:
  with (path(workdir) / "metrics.jsonl").open("a") as f:
    f.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------------------------------------------
# config.json and config differences
# ---------------------------------------------------------------------------------------------------


def write_config(workdir, config_json: dict) -> None:
  (path(workdir) / "config.json").write_text(json.dumps(config_json, indent=2, sort_keys=True))


def read_config(workdir) -> dict | None:
  p = path(workdir) / "config.json"
  return json.loads(p.read_text()) if p.exists() else None


def flatten(d: dict, prefix: str = "") -> dict:
  """{dotted path: leaf value} of a nested dict (a config as config.json holds it)."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def loss_defaults(name: str) -> dict[str, Any]:
  """Every hyperparameter `aplx.losses.get(name)` accepts (`aplx.losses.info(name).params`), with its
  default; {} for an unknown name."""
  from aplx import losses  # pylint: disable=g-import-not-at-top

  try:
    return dict(losses.info(name).params)
  except (TypeError, ValueError):
    return {}  # aplx.losses.get reports the name, listing the valid ones.


def model_defaults(name: str) -> dict[str, Any]:
  """The keyword options of `aplx.models.get(name)` (besides num_classes and rngs) with their defaults,
  as a config holds them (a dtype by name: 'float32'); {} for an unknown name."""
  from aplx import models  # pylint: disable=g-import-not-at-top

  if name not in models.names():
    return {}
  builder = getattr(models, name)  # Each registered model is exported under its name.
  out = {}
  for p in inspect.signature(builder).parameters.values():
    if p.kind == p.KEYWORD_ONLY and p.default is not p.empty and p.name not in ("num_classes", "rngs"):
      out[p.name] = np.dtype(p.default).name if p.name == "dtype" else p.default
  return out


def field_defaults(config: dict) -> dict[str, Any]:
  """{dotted path: default} of the fields a config may leave out: the trainer's (`aplx.train.DEFAULTS`),
  `loss.params.<p>` for every parameter of its loss and `model.kwargs.<k>` for every option of its model."""
  from aplx.train.config import DEFAULTS  # pylint: disable=g-import-not-at-top

  out = {k: v for k, v in DEFAULTS.items() if not isinstance(v, dict)}
  loss, model = config.get("loss") or {}, config.get("model") or {}
  out.update({f"loss.params.{k}": v for k, v in loss_defaults(loss.get("name")).items()})
  out.update({f"model.kwargs.{k}": v for k, v in model_defaults(model.get("name")).items()})
  return out


def config_diff(saved: dict, now: dict) -> list[str]:
  """Fields (dotted paths) that differ between two configs, as 'key: saved -> now', ignoring
  RESUMABLE_CHANGES. A field that one side lacks is equal when the other holds its default
  (`field_defaults`). Empty: a run written with `saved` may be resumed with `now`."""
  a, b = flatten(saved), flatten(now)
  keys = [k for k in sorted(set(a) | set(b)) if k.split(".")[0] not in RESUMABLE_CHANGES]
  defaults = field_defaults(now) if any((k in a) != (k in b) for k in keys) else {}
  missing = object()

  def same(k):
    if k in a and k in b:
      return a[k] == b[k]
    default = defaults.get(k, missing)
    return default is not missing and a.get(k, b.get(k)) == default

  return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys if not same(k)]


# ---------------------------------------------------------------------------------------------------
# status.json
# ---------------------------------------------------------------------------------------------------


def write_status(workdir, status: str, **info) -> None:
  p = path(workdir) / "status.json"
  tmp = p.parent / "status.json.tmp"
  tmp.write_text(json.dumps({"status": status, "time": time.strftime("%Y-%m-%d %H:%M:%S"), **info}))
  tmp.replace(p)


def read_status(workdir) -> dict:
  """{"status": ...} as the last process left it; {} if none was written (older runs, not started)."""
  p = path(workdir) / "status.json"
  try:
    return json.loads(p.read_text()) if p.exists() else {}
  except json.JSONDecodeError:
    return {}
