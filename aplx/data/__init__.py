"""TFDS input pipelines with label noise (docs/data.md).

Public API:
  load_dataset(name, *, data_dir=None, noise="none", rate=0.0, noise_seed=0, subset=None,
               image_size=None, ...)   (webvision, webvision_full, clothing1m: streamed, docs/data.md)
  train_batches(ds, *, global_batch_size, seed, start_step=0, process_index=0, process_count=1,
                augment=True, num_threads=1, num_workers=0)
  hold_out(ds, fraction, *, seed, fold=0)   (a validation split by example id)
  eval_batches(ds, *, batch_size, split="test", process_index=0, process_count=1, num_threads=1)
                (split: "test", "train", "val" or a key of ds.eval_sets)
  steps_per_epoch(ds, global_batch_size)
  check_image_size(name, image_size)   (ValueError unless the dataset takes that image size)
  device.put / device.chunk / device.make_batch   (batches made on the accelerator: config.device_data)
  ensure_prepared(name, data_dir=None, *, download=True)
  prepare_dataset(name, *, data_dir=None, raw_dir=None)   (module: aplx.data.prepare, a CLI)
"""

from aplx.data import device
from aplx.data.pipeline import (
  DATASETS,
  Dataset,
  check_image_size,
  eval_batches,
  hold_out,
  load_dataset,
  make_train_batch,
  steps_per_epoch,
  train_batches,
  train_indices,
  validation_mask,
)
from aplx.data.prepare import (
  default_data_dir,
  default_mnist_dir,
  ensure_prepared,
  is_prepared,
  prepare_command,
)
from aplx.data.prepare import prepare as prepare_dataset

__all__ = [
  "DATASETS",
  "Dataset",
  "check_image_size",
  "default_data_dir",
  "default_mnist_dir",
  "device",
  "ensure_prepared",
  "eval_batches",
  "hold_out",
  "is_prepared",
  "load_dataset",
  "make_train_batch",
  "prepare_command",
  "prepare_dataset",
  "steps_per_epoch",
  "train_batches",
  "train_indices",
  "validation_mask",
]
