"""The run directory: what a training run leaves in its workdir, written and read in one place.

  <workdir>/config.json     the run's config (`ConfigDict.to_json_best_effort`), written at start
  <workdir>/metrics.jsonl   one JSON object per finished epoch, append-only: appended once that
                            epoch's checkpoint is committed, never rewritten. Every checkpoint also
                            holds the records so far, so a start appends any that the file lacks
  <workdir>/metrics.jsonl.damaged  lines of metrics.jsonl that do not parse (a torn write, a damaged
                            disk), copied here by the trainer with a warning; `read_metrics` skips them
  <workdir>/status.json     {"status": RUNNING | FINISHED | STOPPED | PREEMPTED | FAILED, "step",
                            "epoch", "time", "error"}: how the last process left the run (STOPPED:
                            at config.max_steps, before the end of the schedule)
  <workdir>/checkpoints/    orbax checkpoints (aplx.train)
  <workdir>/lock            the host and PID of the process training in it (aplx.train.workdir)
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
STOPPED = "stopped"  # Reached config.max_steps before the end of its schedule (a screen, a test).

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
  "diagnostics",  # Counted beside training, never fed back into it (tests/test_diagnostics.py).
)


def path(workdir: str | epath.Path) -> epath.Path:
  """The workdir as an `epath.Path` (local paths made absolute; URIs such as gs:// kept)."""
  p = epath.Path(workdir)
  return p if "://" in str(workdir) else epath.Path(p.expanduser().resolve())


# ---------------------------------------------------------------------------------------------------
# metrics.jsonl
# ---------------------------------------------------------------------------------------------------


def read_metrics_lines(workdir) -> tuple[list[dict], list[str]]:
  """(the per-epoch records in epoch order, the lines that are not a record). A line that does not
  parse (torn by a kill, damaged) is skipped; of two records of one epoch the first is kept."""
  p = path(workdir) / "metrics.jsonl"
  if not p.exists():
    return [], []
  records, damaged = {}, []
  for line in p.read_bytes().decode(errors="replace").splitlines():
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      epoch = record["epoch"]
    except (json.JSONDecodeError, TypeError, KeyError):
      damaged.append(line)
      continue
    records.setdefault(epoch, record)
  return [records[e] for e in sorted(records)], damaged


def read_metrics(workdir) -> list[dict]:
  """The per-epoch records, in epoch order (`read_metrics_lines`, damaged lines skipped)."""
  return read_metrics_lines(workdir)[0]


def write_metrics(workdir, records: list[dict]) -> None:
  """Replaces metrics.jsonl with `records` (write to a temporary file, then rename): for tools and
  tests; the trainer only appends (`append_metrics`)."""
  _write_atomically(path(workdir) / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in records))


def append_metrics(workdir, record: dict) -> None:
  """Appends one record, on a line of its own even after a torn last line."""
  p = path(workdir) / "metrics.jsonl"
  text = p.read_bytes().decode(errors="replace") if p.exists() else ""
  torn = bool(text) and not text.endswith("\n")
  with p.open("a") as f:
    f.write(("\n" if torn else "") + json.dumps(record) + "\n")


# ---------------------------------------------------------------------------------------------------
# config.json and config differences
# ---------------------------------------------------------------------------------------------------


def _write_atomically(p: epath.Path, text: str) -> None:
  """Writes a temporary file beside `p`, then renames it: `p` is never left half-written."""
  tmp = p.parent / (p.name + ".tmp")
  try:
    tmp.write_text(text)
    tmp.replace(p)
  except BaseException:
    if tmp.exists():
      tmp.unlink()  # A full disk leaves neither a half-written file nor a stray temporary one.
    raise


def write_config(workdir, config_json: dict) -> None:
  _write_atomically(path(workdir) / "config.json", json.dumps(config_json, indent=2, sort_keys=True))


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
  text = json.dumps({"status": status, "time": time.strftime("%Y-%m-%d %H:%M:%S"), **info})
  _write_atomically(path(workdir) / "status.json", text)


def read_status(workdir) -> dict:
  """{"status": ...} as the last process left it; {} if none was written (older runs, not started)."""
  p = path(workdir) / "status.json"
  try:
    return json.loads(p.read_text()) if p.exists() else {}
  except json.JSONDecodeError:
    return {}
