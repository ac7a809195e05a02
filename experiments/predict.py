r"""Class probabilities of a trained run by example id: the input of label-issue tools such as cleanlab.

  python -m experiments.predict --workdir runs/m/sym0.8/ce/seed0 --split train --out probs.npz
  python -m experiments.predict --workdir W --split val --checkpoint_step 4690
  python -m experiments.predict --workdir W0,W1,W2,W3,W4 --split val --out oof.npz   # cross-validation

Loads the run's config.json and its newest checkpoint (or --checkpoint_step) with the trainer's own
functions (`aplx.train.load_data`, `create_train_state`, `restore_checkpoint`), so it sees exactly the
run's examples, noisy labels and validation split; runs the model in eval mode (BatchNorm running
statistics, no augmentation) over --split, and writes an .npz, rows sorted by example id:

  example_id   int32 [n]       stable id: TFDS index in the train split (train, val); row of the test split
  probs        float32 [n, K]  softmax of the model's logits
  noisy_label  int32 [n]       the label the run was given (the test split has none: its clean label)
  clean_label  int32 [n]       the true label; -1 where it is unknown (WebVision's training images,
                               most of Clothing1M's)
  split        str             'train' (the examples the run trained on), 'val' (held out), 'test', or
                               a further evaluation split of the dataset ('imagenet_val', 'clean_val')
  step, epoch  int             the checkpoint's step and completed epochs (-1 for several workdirs)

With cleanlab (not a dependency of aplx):

  z = np.load("probs.npz")
  issues = cleanlab.filter.find_label_issues(labels=z["noisy_label"], pred_probs=z["probs"])

In-sample caveat: on --split train the probabilities come from a model trained on those very examples
and labels. A network that memorised a wrong label gives it high probability, so label-issue tools,
which expect out-of-sample probabilities, find fewer issues there than exist. Out-of-sample
probabilities come from examples the model never trained on: --split val of a run with
`config.val_fraction > 0`, or for every training example, n-fold cross-validation: train n runs with
`--config.val_fraction=f --config.val_fold=k`, f = 1/n as a decimal (0.2, 0.3333), k = 0..n-1 (same
seed: the folds are then disjoint and cover the training set) and pass their workdirs comma-separated
with --split val; the rows are concatenated (an id in two folds is an error). `python -m
experiments.predict` runs in one process, on every device it sees (the batch is sharded over them as in
training).
"""

from collections.abc import Sequence
import os

from absl import app, flags, logging
import jax
import ml_collections
import numpy as np

from aplx import cpu, rundir, train
from aplx import data as data_lib

SPLITS = ("train", "val", "test", "imagenet_val", "clean_val")  # The last two: webvision, clothing1m.


def predict(
  workdir: str,
  split: str = "train",
  *,
  checkpoint_step: int | None = None,
  data_dir: str | None = None,
  batch_size: int | None = None,
) -> dict[str, np.ndarray]:
  """The .npz contents (module docstring) for one run's `split`."""
  if split not in SPLITS:
    raise ValueError(f"split={split!r}: use one of {SPLITS}.")
  if jax.process_count() > 1:
    raise RuntimeError("experiments.predict runs in one process (on all of its devices).")
  saved = rundir.read_config(workdir)
  if saved is None:
    raise FileNotFoundError(f"No config.json in {workdir}: not a run's workdir.")
  config = train.with_defaults(ml_collections.ConfigDict(saved))
  if data_dir:
    config.data_dir = data_dir  # A path, not part of what the run computed (rundir.RESUMABLE_CHANGES).
  ds = train.load_data(config)
  if split in ("imagenet_val", "clean_val") and split not in ds.eval_sets:
    raise ValueError(f"{config.dataset} has no split {split!r} (its extra splits: {sorted(ds.eval_sets)}).")
  if split == "val" and not ds.num_val:
    raise ValueError(
      f"{workdir} has no validation split (config.val_fraction is 0): use --split train or test, or "
      "train with --config.val_fraction > 0 for out-of-sample probabilities."
    )
  batch_size = batch_size or config.eval_batch_size
  if batch_size % jax.device_count():
    raise ValueError(
      f"batch size {batch_size} is not divisible by the {jax.device_count()} devices: pass --batch_size."
    )

  # The run's model and state, restored as the trainer builds them.
  mesh = train.make_mesh()
  layout = {"drop_remainder": config.drop_remainder, "multiple_of": jax.device_count()}
  schedule = train.make_schedule(
    config.optim, data_lib.steps_per_epoch(ds, config.batch_size, **layout), config.epochs
  )
  model = train.create_model(config, ds.num_classes)
  _, eval_graphdef, state = train.create_train_state(
    config, model, train.make_optimizer(config.optim, schedule), mesh
  )
  state, epoch = train.restore_checkpoint(workdir, state, config, checkpoint_step)
  step = jax.jit(train.make_predict_step(eval_graphdef), compiler_options=cpu.compiler_options())
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))

  probs, ids, noisy, clean = [], [], [], []
  threads = max(1, config.data_workers)  # Streamed datasets decode in this many threads.
  for batch in data_lib.eval_batches(ds, batch_size=batch_size, split=split, num_threads=threads):
    rows = batch["mask"] > 0
    probs.append(np.asarray(step(state, {"image": jax.device_put(batch["image"], sharding)}))[rows])
    clean.append(batch["label"][rows])
    noisy.append(batch.get("noisy_label", batch["label"])[rows])  # The test split has clean labels only.
    start = sum(len(c) for c in ids)
    ids.append(batch["id"][rows] if "id" in batch else np.arange(start, start + rows.sum(), dtype=np.int32))
  out = {
    "example_id": np.concatenate(ids),
    "probs": np.concatenate(probs).astype(np.float32),
    "noisy_label": np.concatenate(noisy).astype(np.int32),
    "clean_label": np.concatenate(clean).astype(np.int32),
  }
  order = np.argsort(out["example_id"], kind="stable")
  out = {k: v[order] for k, v in out.items()}
  return out | {"split": np.array(split), "step": np.array(int(state.step)), "epoch": np.array(epoch)}


def predict_folds(workdirs: Sequence[str], split: str = "val", **kwargs) -> dict[str, np.ndarray]:
  """`predict` of several runs (cross-validation folds), rows concatenated and sorted by id. ValueError
  if their configs differ in more than `val_fold`, or an id appears in two of them."""
  configs = [rundir.read_config(w) for w in workdirs]
  for w, config in zip(workdirs[1:], configs[1:]):
    if configs[0] is None or config is None:
      continue  # `predict` reports the missing config.json.
    diff = [d for d in rundir.config_diff(configs[0], config) if not d.startswith("val_fold:")]
    if diff:
      raise ValueError(f"{w} is not a fold of the cross-validation of {workdirs[0]}: {'; '.join(diff)}.")
  parts = [predict(w, split, **kwargs) for w in workdirs]
  if len(parts) == 1:
    return parts[0]
  keys = ("example_id", "probs", "noisy_label", "clean_label")
  out = {k: np.concatenate([p[k] for p in parts]) for k in keys}
  order = np.argsort(out["example_id"], kind="stable")
  out = {k: v[order] for k, v in out.items()}
  repeated = out["example_id"][1:][np.diff(out["example_id"]) == 0]
  if repeated.size:
    raise ValueError(
      f"example ids {repeated[:5].tolist()} appear in more than one of the {len(parts)} runs: folds of "
      "one cross-validation share the seed and val_fraction and differ in val_fold."
    )
  return out | {"split": np.array(split), "step": np.array(-1), "epoch": np.array(-1)}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments {argv[1:]}.")
  logging.set_verbosity(logging.WARNING)  # orbax logs every restore step at INFO.
  workdirs = _WORKDIR.value
  if not workdirs:
    raise app.UsageError("--workdir is required.")
  if len(workdirs) > 1 and (_STEP.value is not None or not _OUT.value):
    raise app.UsageError("Several --workdir (cross-validation folds) need --out and no --checkpoint_step.")
  kwargs = {"checkpoint_step": _STEP.value, "data_dir": _DATA_DIR.value, "batch_size": _BATCH.value}
  try:
    out = predict_folds(workdirs, _SPLIT.value, **kwargs)
  except (train.ConfigError, train.CheckpointError, FileNotFoundError, ValueError) as e:
    raise app.UsageError(str(e)) from None
  path = _OUT.value or os.path.join(workdirs[0], "predictions", f"{_SPLIT.value}-step{int(out['step'])}.npz")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  np.savez(path, **out)
  print(f"{path}: {out['probs'].shape[0]} {_SPLIT.value} examples x {out['probs'].shape[1]} classes.")


if __name__ == "__main__":
  _WORKDIR = flags.DEFINE_list("workdir", None, "The run's workdir (several, comma-separated: CV folds).")
  _SPLIT = flags.DEFINE_enum("split", "train", SPLITS, "Which examples: trained on, held out, or test.")
  _OUT = flags.DEFINE_string("out", None, "The .npz (default <workdir>/predictions/<split>-step<N>.npz).")
  _STEP = flags.DEFINE_integer("checkpoint_step", None, "The checkpoint's step (default: the newest).")
  _DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir, if not the run's config.data_dir.")
  _BATCH = flags.DEFINE_integer("batch_size", None, "Eval batch size (default: the run's eval_batch_size).")
  app.run(main)
