r"""MNIST trained as the authors' own code trains it: a PyTorch reference run to set beside aplx's.

  python -m benchmarks.reference.authors_mnist --loss nce+rce --noise asym --rate 0.4 --seed 3 \
      --noise_seed 0 --epochs 50 --max_epochs 5 --workdir runs/reference/nce+rce_asym0.4_s3

Written from HanxunH/Active-Passive-Losses (commit 04bce53; benchmarks/reference/README.md has the
file:line of every setting): `main.py` and `trainer.py` (the loop), `dataset.py` (`DatasetGenerator`,
`MNISTNoisy`: normalisation and noise), `loss.py` (the losses), `models.py` (`ToyModel`, type "MNIST",
which benchmarks/torch_mnist.py defines) and `configs/mnist/{sym,asym}/*.yaml` (the settings below).
CPU, float32, eager PyTorch; needs the ``[bench]`` extra (``pip install torch==2.13.0``), not JAX.

What the authors' code leaves unseeded is seeded here: `--seed` seeds the model's initialisation
(`torch.manual_seed`) and the batch order (the DataLoader's generator). `--noise_seed` (default: the
seed, as the authors draw the noise from their `--seed`) seeds their NumPy noise procedure. `--labels`
replaces that procedure by a file of noisy labels (`python -m aplx.noise export ... --out labels.npz`),
so that this code and aplx train on one draw.

`<workdir>/metrics.jsonl` gets one JSON line per epoch with aplx's field names, `<workdir>/config.json`
every flag and what the run resolved them to. A workdir that already holds this config's epochs is left
as it is; the harness does not resume.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import pathlib
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from aplx import noise as aplx_noise
from benchmarks.torch_mnist import ToyModelMNIST

# ---------------------------------------------------------------------------------------------------
# The authors' MNIST settings (configs/mnist/{sym,asym}/*.yaml; identical in every MNIST config but NLNL's)
# ---------------------------------------------------------------------------------------------------

NUM_CLASSES = 10
EPOCHS = 50
BATCH_SIZE = 128  # dataset.train_batch_size; the DataLoader keeps the last, smaller batch.
EVAL_BATCH_SIZE = 512
SGD = {"lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2}
ETA_MIN = 0.001  # CosineAnnealingLR(T_max=epochs, eta_min), stepped once per epoch.
GRAD_BOUND = 5.0  # clip_grad_norm_(model.parameters(), grad_bound) before every SGD step.
MEAN, STD = 0.1307, 0.3081  # transforms.Normalize after ToTensor; no augmentation.
# dataset.py MNISTNoisy, asym: 7 -> 1, 2 -> 7, 5 <-> 6, 3 -> 8 (source, target).
ASYM_PAIRS = ((7, 1), (2, 7), (5, 6), (6, 5), (3, 8))

# ---------------------------------------------------------------------------------------------------
# The losses of loss.py, each reduced as there (a mean over the batch, then the class's scale)
# ---------------------------------------------------------------------------------------------------
# The one-hot labels take the logits' dtype (loss.py makes them float32), so that a float64 check
# computes RCE's log(1e-4) in float64; in float32 training that is the authors' arithmetic.


def _one_hot(logits, labels):
  return F.one_hot(labels, logits.shape[1]).to(logits.dtype)


def _gather(values, labels):
  return values.gather(1, labels[:, None])[:, 0]


def ce(logits, labels):
  """torch.nn.CrossEntropyLoss()."""
  return F.cross_entropy(logits, labels)


def nce(logits, labels, scale=1.0):
  """NormalizedCrossEntropy: log p_y / sum_k log p_k."""
  log_p = F.log_softmax(logits, dim=1)
  return scale * (-(_one_hot(logits, labels) * log_p).sum(1) / -log_p.sum(1)).mean()


def _rce(logits, labels):
  p = F.softmax(logits, dim=1).clamp(min=1e-7, max=1.0)
  return -(p * _one_hot(logits, labels).clamp(min=1e-4, max=1.0).log()).sum(1)


def rce(logits, labels, scale=1.0):
  """ReverseCrossEntropy: -sum_k clamp(p_k, 1e-7, 1) log clamp(onehot_k, 1e-4, 1)."""
  return scale * _rce(logits, labels).mean()


def mae(logits, labels, scale=1.0):
  """MeanAbsoluteError, the authors' "reduced MAE": 1 - p_y."""
  p = F.softmax(logits, dim=1)
  return scale * (1.0 - (_one_hot(logits, labels) * p).sum(1)).mean()


def gce(logits, labels, q):
  """GeneralizedCrossEntropy: (1 - clamp(p_y, 1e-7, 1)^q) / q."""
  p = F.softmax(logits, dim=1).clamp(min=1e-7, max=1.0)
  return ((1.0 - (_one_hot(logits, labels) * p).sum(1) ** q) / q).mean()


def sce(logits, labels, alpha, beta):
  """SCELoss: alpha CE + beta RCE."""
  return alpha * F.cross_entropy(logits, labels) + beta * _rce(logits, labels).mean()


def fl(logits, labels, gamma):
  """FocalLoss (alpha=None): -(1 - p_y)^gamma log p_y, no gradient through (1 - p_y)^gamma."""
  log_p_y = _gather(F.log_softmax(logits, dim=1), labels)
  return (-((1.0 - log_p_y.detach().exp()) ** gamma) * log_p_y).mean()


def nfl(logits, labels, gamma, scale=1.0):
  """NormalizedFocalLoss: FL_y / sum_k FL_k, no gradient through any (1 - p)^gamma factor."""
  log_p = F.log_softmax(logits, dim=1)
  normalizer = (-((1.0 - log_p.detach().exp()) ** gamma) * log_p).sum(1)
  log_p_y = _gather(log_p, labels)
  return (scale * (-((1.0 - log_p_y.detach().exp()) ** gamma) * log_p_y) / normalizer).mean()


# Name -> (loss(logits, labels, **params), the params of configs/mnist/*/<config>.yaml).
LOSSES = {
  "ce": (ce, {}),
  "nce+rce": (lambda z, y, alpha, beta: nce(z, y, alpha) + rce(z, y, beta), {"alpha": 1.0, "beta": 10.0}),
  "nce+mae": (lambda z, y, alpha, beta: nce(z, y, alpha) + mae(z, y, beta), {"alpha": 1.0, "beta": 10.0}),
  "sce": (sce, {"alpha": 0.01, "beta": 1.0}),
  "gce": (gce, {"q": 0.7}),
  "fl": (fl, {"gamma": 0.5}),  # focal.yaml
  "nfl+rce": (
    lambda z, y, alpha, beta, gamma: nfl(z, y, gamma, alpha) + rce(z, y, beta),
    {"alpha": 1.0, "beta": 10.0, "gamma": 0.5},
  ),
  "nfl+mae": (
    lambda z, y, alpha, beta, gamma: nfl(z, y, gamma, alpha) + mae(z, y, beta),
    {"alpha": 1.0, "beta": 10.0, "gamma": 0.5},
  ),
}


def get_loss(name: str):
  """`loss(logits, labels) -> batch loss` with the authors' MNIST hyperparameters, and those values."""
  fn, params = LOSSES[name]
  return (lambda logits, labels: fn(logits, labels, **params)), dict(params)


# ---------------------------------------------------------------------------------------------------
# The authors' noise procedure (dataset.py), on the training labels in the IDX file's order
# ---------------------------------------------------------------------------------------------------


def symmetric_noise(labels: np.ndarray, rate: float, seed: int) -> np.ndarray:
  """MNISTNoisy's symmetric branch after DatasetGenerator's `np.random.seed(seed)`.

  Exactly int(int(rate * n) / 10) examples of each clean class, drawn without replacement, each
  relabelled to a class drawn uniformly from the 9 others. One legacy NumPy stream, in this order: the
  choices class by class, then the new labels in the order chosen (a RandomState(seed) gives the same
  numbers as the global `np.random` seeded with seed).
  """
  rng = np.random.RandomState(seed)
  noisy = labels.copy()
  per_class = int(int(rate * labels.shape[0]) / NUM_CLASSES)
  chosen = []
  for c in range(NUM_CLASSES):
    chosen.extend(rng.choice(np.flatnonzero(labels == c), per_class, replace=False))
  for i in chosen:
    noisy[i] = rng.choice([k for k in range(NUM_CLASSES) if k != noisy[i]])
  return noisy


def asymmetric_noise(labels: np.ndarray, rate: float, seed: int) -> np.ndarray:
  """MNISTNoisy's asymmetric branch: `multiclass_noisify(labels, P, random_state=seed)`.

  P is the identity but for the rows of `ASYM_PAIRS` (1 - rate on the diagonal, rate on the target).
  Every example, in order, draws its label from its row with `RandomState(seed).multinomial(1, row)`:
  a coin flip per example, so each source class's realised rate is `rate` only in expectation.
  """
  P = np.eye(NUM_CLASSES)
  for s, t in ASYM_PAIRS:
    P[s, s], P[s, t] = 1.0 - rate, rate
  rng = np.random.RandomState(seed)
  noisy = labels.copy()
  for i, y in enumerate(labels):
    noisy[i] = np.flatnonzero(rng.multinomial(1, P[y, :], 1)[0] == 1)[0]
  return noisy


def noisy_labels(clean: np.ndarray, noise: str, rate: float, seed: int) -> np.ndarray:
  if noise == "none":
    return clean.copy()
  return (symmetric_noise if noise == "sym" else asymmetric_noise)(clean, rate, seed)


def read_labels_file(path: str, clean: np.ndarray) -> tuple[np.ndarray, dict | None]:
  """Noisy labels in the IDX file's order: an `aplx.noise export` .npz (its clean labels must be this
  MNIST's) or a .npy of n integers. Returns (labels, the export's provenance or None)."""
  provenance = None
  if str(path).endswith(".npz"):
    with np.load(path) as f:
      labels = f["noisy_label"]
      if "clean_label" in f.files and not np.array_equal(f["clean_label"], clean):
        raise SystemExit(f"{path}: its clean labels are not this MNIST's training labels in file order.")
      if "provenance" in f.files:
        provenance = json.loads(str(f["provenance"]))
  else:
    labels = np.load(path)
  labels = np.asarray(labels)
  if labels.shape != clean.shape or not np.issubdtype(labels.dtype, np.integer):
    raise SystemExit(f"{path}: expected {clean.shape[0]} integer labels, got {labels.dtype} {labels.shape}.")
  if labels.min() < 0 or labels.max() >= NUM_CLASSES:
    raise SystemExit(f"{path}: labels must be in [0, {NUM_CLASSES}).")
  return labels.astype(np.int64), provenance


# ---------------------------------------------------------------------------------------------------
# MNIST from its IDX files, as ToTensor + Normalize give it
# ---------------------------------------------------------------------------------------------------


def read_idx(path: pathlib.Path) -> np.ndarray:
  """An unsigned-byte IDX file (optionally gzipped) as a uint8 array of its declared shape."""
  data = path.read_bytes()
  if data[:2] == b"\x1f\x8b":
    data = gzip.decompress(data)
  if data[:3] != b"\x00\x00\x08":
    raise ValueError(f"{path} is not an unsigned-byte IDX file.")
  ndim = data[3]
  shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
  return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def read_mnist(mnist_dir: str, part: str, split: str) -> np.ndarray:
  """`part` ("images" or "labels") of `split` ("train" or "t10k") from mnist_dir."""
  kind = "idx3" if part == "images" else "idx1"
  for name in (f"{split}-{part}-{kind}-ubyte.gz", f"{split}-{part}-{kind}-ubyte"):
    if (pathlib.Path(mnist_dir) / name).is_file():
      return read_idx(pathlib.Path(mnist_dir) / name)
  raise SystemExit(f"{mnist_dir} has no {split}-{part}-{kind}-ubyte[.gz] (--mnist_dir, $APLX_MNIST_DIR).")


def to_tensor(images: np.ndarray) -> torch.Tensor:
  """[n, 28, 28] uint8 -> [n, 1, 28, 28] float32: x / 255, then (x - mean) / std, as in dataset.py."""
  x = torch.from_numpy(np.array(images))[:, None].to(torch.float32).div(255)
  return x.sub(torch.tensor(MEAN)).div(torch.tensor(STD))


# ---------------------------------------------------------------------------------------------------
# One epoch of training (trainer.py), evaluation (evaluator.py)
# ---------------------------------------------------------------------------------------------------


def train_epoch(model, loader, loss_fn, optimizer) -> dict:
  """Trainer.train: forward in training mode, loss, backward, clip, SGD step; the epoch's sums."""
  model.train()
  loss_sum, noisy_hits, clean_hits, count = 0.0, 0, 0, 0
  for x, y, clean in loader:
    optimizer.zero_grad()
    logits = model(x)
    loss = loss_fn(logits, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_BOUND)
    optimizer.step()
    value = loss.item()
    if not math.isfinite(value):
      raise FloatingPointError(f"the loss is {value} at step {count // BATCH_SIZE} of the epoch.")
    pred = logits.detach().argmax(1)
    loss_sum += value * y.shape[0]
    noisy_hits += int((pred == y).sum())
    clean_hits += int((pred == clean).sum())
    count += y.shape[0]
  return {
    "train_loss": loss_sum / count,
    "train_acc_noisy": noisy_hits / count,
    "train_acc_clean": clean_hits / count,
    "count": count,
  }


@torch.no_grad()
def evaluate(model, images: torch.Tensor, labels: torch.Tensor) -> dict:
  """Clean test accuracy, overall and per class (None for a class with no image), in evaluation mode."""
  model.eval()
  pred = torch.cat([model(x).argmax(1) for x in images.split(EVAL_BATCH_SIZE)])
  hit = pred == labels
  per_class = [
    hit[labels == c].double().mean().item() if (labels == c).any() else None for c in range(NUM_CLASSES)
  ]
  return {"test_acc": hit.double().mean().item(), "test_acc_per_class": per_class}


# ---------------------------------------------------------------------------------------------------
# The workdir: config.json, metrics.jsonl
# ---------------------------------------------------------------------------------------------------

# The fields that make two runs the same run (the rest: where and how fast it runs, how far it goes).
IDENTITY = (
  "code", "loss", "loss_params", "noise", "rate", "seed", "noise_seed", "epochs", "subset",
  "noisy_label_sha256",
)  # fmt: skip


def read_records(path: pathlib.Path) -> list[dict]:
  """The epochs of metrics.jsonl (1, 2, ... in order); SystemExit if it holds anything else."""
  if not path.exists():
    return []
  records = []
  for n, line in enumerate(path.read_text().splitlines(), 1):
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      raise SystemExit(f"{path}:{n} is not a JSON line; look at it before rerunning.") from None
    if record.get("epoch") != len(records) + 1:
      raise SystemExit(f"{path}:{n} is epoch {record.get('epoch')}, expected {len(records) + 1}.")
    records.append(record)
  return records


def already_done(workdir: pathlib.Path, config: dict, target: int) -> bool:
  """True if workdir holds `target` or more epochs of `config`; False if it holds none (a fresh run).
  SystemExit if it holds another config, or fewer epochs (this harness does not resume)."""
  config_path, metrics_path = workdir / "config.json", workdir / "metrics.jsonl"
  records = read_records(metrics_path)
  if not config_path.exists():
    if records:
      raise SystemExit(f"{metrics_path} exists without a config.json: use another --workdir.")
    return False
  old = json.loads(config_path.read_text())
  differ = [k for k in IDENTITY if old.get(k) != config[k]]
  if differ:
    diff = ", ".join(f"{k}: {old.get(k)!r} there, {config[k]!r} here" for k in differ)
    raise SystemExit(f"{workdir} holds another run ({diff}); use another --workdir.")
  if len(records) >= target:
    print(f"{workdir} already holds epochs 1-{len(records)} of this config; nothing to do.", flush=True)
    return True
  if records:
    raise SystemExit(
      f"{workdir} holds {len(records)} epoch(s) of this config, fewer than the {target} asked; this harness "
      "does not resume: use another --workdir (or move this one away)."
    )
  return False


def format_line(record: dict, epochs: int) -> str:
  per_class = [(a, c) for c, a in enumerate(record["test_acc_per_class"]) if a is not None]
  acc, lowest = min(per_class)
  return (
    f"epoch {record['epoch']}/{epochs}  loss {record['train_loss']:.4f}  "
    f"train acc noisy {100 * record['train_acc_noisy']:.2f}% clean {100 * record['train_acc_clean']:.2f}%  "
    f"test acc {100 * record['test_acc']:.2f}% (lowest: class {lowest} "
    f"{100 * acc:.2f}%)  lr {record['lr']:.5f}  {record['seconds']:.1f} s"
  )


# ---------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(
    prog="python -m benchmarks.reference.authors_mnist",
    description="MNIST as HanxunH/Active-Passive-Losses trains it (PyTorch, CPU): a reference for aplx.",
  )
  p.add_argument("--loss", choices=sorted(LOSSES), default="nce+rce")
  p.add_argument("--noise", choices=("none", "sym", "asym"), default="sym")
  p.add_argument("--rate", type=float, default=0.0)
  p.add_argument("--seed", type=int, default=0, help="torch initialisation and batch-order seed")
  p.add_argument("--noise_seed", type=int, default=None, help="seed of the authors' noise (default: --seed)")
  p.add_argument("--epochs", type=int, default=EPOCHS, help="the cosine schedule's length (T_max)")
  p.add_argument("--max_epochs", type=int, default=None, help="stop after this many epochs of the schedule")
  p.add_argument(
    "--labels",
    default=None,
    help="noisy training labels in file order (aplx.noise export .npz, or .npy) instead of the authors' "
    "noise; --noise and --rate then only name the setting (checked against the export's provenance)",
  )
  p.add_argument(
    "--subset",
    type=int,
    default=None,
    help="smoke runs: the first N training and test images (noise drawn on all)",
  )
  p.add_argument("--mnist_dir", default=os.environ.get("APLX_MNIST_DIR"), help="default $APLX_MNIST_DIR")
  p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
  p.add_argument("--workdir", required=True)
  args = p.parse_args(argv)
  if args.noise_seed is None:
    args.noise_seed = args.seed
  args.max_epochs = min(args.max_epochs or args.epochs, args.epochs)
  if not 0.0 <= args.rate <= 1.0 or (args.noise == "none" and args.rate):
    p.error(f"--rate {args.rate}: a rate in [0, 1], and 0 with --noise none.")
  if min(args.epochs, args.max_epochs) < 1 or (args.subset is not None and args.subset < 1):
    p.error("--epochs, --max_epochs and --subset are >= 1.")
  if not args.mnist_dir:
    p.error("--mnist_dir (or $APLX_MNIST_DIR): the directory of the MNIST IDX files.")
  return args


def resolve_labels(args, clean: np.ndarray) -> tuple[np.ndarray, dict | None]:
  """The noisy training labels (file order): the authors' noise, or --labels. And the export's provenance."""
  if not args.labels:
    return noisy_labels(clean, args.noise, args.rate, args.noise_seed), None
  noisy, provenance = read_labels_file(args.labels, clean)
  if provenance and (provenance.get("noise"), provenance.get("rate")) != (args.noise, args.rate):
    raise SystemExit(
      f"{args.labels} holds {provenance.get('noise')} noise at rate {provenance.get('rate')}; "
      f"the flags say {args.noise} {args.rate}."
    )
  return noisy, provenance


def make_config(args, noisy: np.ndarray, clean: np.ndarray, provenance: dict | None) -> dict:
  """config.json: every flag, the loss's values, the labels' SHA-256 (aplx's convention: int32 LE, file
  order) and realised rate, the export's provenance, torch, and the authors' settings."""
  return {
    **vars(args),
    "code": "authors-pytorch",
    "torch_version": torch.__version__,
    "num_threads": torch.get_num_threads(),
    "loss_params": LOSSES[args.loss][1],
    "noisy_label_sha256": aplx_noise.labels_sha256(noisy),
    "realised_rate": float((noisy != clean).mean()),
    "labels_provenance": provenance,
    "settings": {
      "batch_size": BATCH_SIZE,
      "drop_last": False,
      "sgd": SGD,
      "schedule": f"CosineAnnealingLR(T_max={args.epochs}, eta_min={ETA_MIN}), stepped per epoch",
      "grad_clip_norm": GRAD_BOUND,
      "normalize": [MEAN, STD],
      "augment": False,
      "eval_batch_size": EVAL_BATCH_SIZE,
    },
  }


def train(args, train_set, test_images, test_labels, workdir: pathlib.Path) -> list[dict]:
  """main.py's loop: `epochs` long, stopped after `max_epochs`; a record appended per epoch."""
  torch.manual_seed(args.seed)
  model = ToyModelMNIST(NUM_CLASSES)
  loader = torch.utils.data.DataLoader(
    train_set, batch_size=BATCH_SIZE, shuffle=True, generator=torch.Generator().manual_seed(args.seed)
  )
  loss_fn, _ = get_loss(args.loss)
  optimizer = torch.optim.SGD(model.parameters(), **SGD)
  scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs, eta_min=ETA_MIN)
  records = []
  for epoch in range(1, args.max_epochs + 1):
    lr = optimizer.param_groups[0]["lr"]
    start = time.perf_counter()
    sums = train_epoch(model, loader, loss_fn, optimizer)
    seconds = time.perf_counter() - start
    scheduler.step()
    count = sums.pop("count")
    record = {"epoch": epoch, "step": epoch * len(loader), "lr": lr, **sums}
    record.update(evaluate(model, test_images, test_labels))
    record.update(seconds=seconds, images_per_sec=count / seconds)
    with open(workdir / "metrics.jsonl", "a") as f:
      f.write(json.dumps(record) + "\n")
    print(format_line(record, args.epochs), flush=True)
    records.append(record)
  return records


def main(argv=None) -> list[dict]:
  """Trains as the flags say; returns the records written by this call ([] if there was nothing to do)."""
  args = parse_args(argv)
  if args.threads:
    torch.set_num_threads(args.threads)
  workdir = pathlib.Path(args.workdir)
  clean = read_mnist(args.mnist_dir, "labels", "train").astype(np.int64)
  noisy, provenance = resolve_labels(args, clean)
  config = make_config(args, noisy, clean, provenance)
  if already_done(workdir, config, args.max_epochs):
    return []
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

  n = args.subset  # None: all.
  train_set = torch.utils.data.TensorDataset(
    to_tensor(read_mnist(args.mnist_dir, "images", "train")[:n]),
    torch.from_numpy(noisy[:n]),
    torch.from_numpy(clean[:n]),
  )
  test_images = to_tensor(read_mnist(args.mnist_dir, "images", "t10k")[:n])
  test_labels = torch.from_numpy(read_mnist(args.mnist_dir, "labels", "t10k")[:n].astype(np.int64))
  source = f"from {args.labels}" if args.labels else f"noise seed {args.noise_seed}"
  print(
    f"{args.loss} {args.noise} {args.rate} (realised {config['realised_rate']:.4f}, labels {source}), "
    f"seed {args.seed}: {len(train_set)} train / {len(test_labels)} test images, epochs 1-{args.max_epochs} "
    f"of {args.epochs}, torch {torch.__version__}, {torch.get_num_threads()} threads -> {workdir}",
    flush=True,
  )
  return train(args, train_set, test_images, test_labels, workdir)


if __name__ == "__main__":
  main(sys.argv[1:])
