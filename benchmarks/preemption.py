r"""Signal-to-exit time of a preempted run: SIGTERM during an epoch -> checkpoint committed -> exit 75.

  python -m benchmarks.preemption                 # MNIST CNN (real MNIST) and CIFAR-10 CNN
  python -m benchmarks.preemption --models=mnist_cnn

Each model trains through `python -m experiments.main` (the real entry point, 1 CPU device) in a
fresh workdir; when the progress line of step 10 appears, the process gets SIGTERM. The table gives
the seconds from the signal to the exit, the step of the preemption checkpoint, and the seconds per
train step of that run (from its progress lines), so the delay reads in step times. The CIFAR-10
model trains on a generated CIFAR-10-format tarball of random images (prepared offline into a
temporary TFDS dir): this measures timing only, never accuracy.
"""

import io
import os
import pickle
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

from absl import app, flags
import numpy as np

_MODELS = flags.DEFINE_list("models", ["mnist_cnn", "cifar10_cnn"], "Models to measure.")
_SIGNAL_AT = 10

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _random_cifar10(root: str) -> str:
  """A CIFAR-10 python tarball of random images (2,560 train, 1,000 test) in the official layout."""
  rng = np.random.default_rng(0)
  path = os.path.join(root, "cifar-10-python.tar.gz")

  def add(tar, name, obj):
    blob = pickle.dumps({k.encode(): v for k, v in obj.items()})
    info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
    info.size = len(blob)
    tar.addfile(info, io.BytesIO(blob))

  with tarfile.open(path, "w:gz") as tar:
    for i in range(1, 6):
      add(
        tar,
        f"data_batch_{i}",
        {"data": rng.integers(0, 256, (512, 3072), np.uint8), "labels": rng.integers(0, 10, 512).tolist()},
      )
    add(
      tar,
      "test_batch",
      {"data": rng.integers(0, 256, (1000, 3072), np.uint8), "labels": rng.integers(0, 10, 1000).tolist()},
    )
    add(tar, "batches.meta", {"label_names": [f"c{i}".encode() for i in range(10)]})
  return path


def _measure(config: str, overrides: list[str], env: dict) -> dict:
  with tempfile.TemporaryDirectory() as workdir:
    cmd = [
      sys.executable,
      "-m",
      "experiments.main",
      "--config",
      config,
      "--config.log_every_steps=5",
      f"--workdir={workdir}",
      *overrides,
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    stamps = {}
    for line in proc.stderr:
      m = re.search(r"step (\d+)/\d+  loss", line)
      if m:
        stamps[int(m.group(1))] = time.time()
      if _SIGNAL_AT in stamps:
        proc.send_signal(signal.SIGTERM)
        signalled = time.time()
        break
    rest = proc.stderr.read()
    rc = proc.wait()
    exited = time.time()
    ckpt = re.search(r"Preempted at step (\d+)", rest)
    return {
      "rc": rc,
      "seconds": exited - signalled,
      "checkpoint_step": int(ckpt.group(1)) if ckpt else None,
      "step_seconds": (stamps[10] - stamps[5]) / 5,
    }


def main(argv):
  del argv
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for model in _MODELS.value:
      if model == "mnist_cnn":
        r = _measure("experiments/configs/mnist.py:loss=nce+rce,noise=sym,rate=0.8", [], env)
      elif model == "cifar10_cnn":
        data_dir = os.path.join(tmp, "tfds")
        subprocess.run(
          [
            sys.executable,
            "-m",
            "aplx.data.prepare",
            "cifar10",
            "--raw_dir",
            _random_cifar10(tmp),
            "--data_dir",
            data_dir,
          ],
          cwd=REPO,
          env=env,
          check=True,
          capture_output=True,
        )
        r = _measure(
          "experiments/configs/cifar10.py:loss=nce+rce,noise=sym,rate=0.8",
          [f"--config.data_dir={data_dir}"],
          env,
        )
      else:
        raise app.UsageError(f"unknown model {model!r}")
      rows.append((model, r))
  print(
    f"\nSIGTERM at the progress line of step {_SIGNAL_AT}, batch 128, 1 CPU device; load average "
    f"{os.getloadavg()[0]:.1f}\n"
  )
  print("| model | exit code | signal -> exit (s) | checkpoint step | s / train step |")
  print("|---|---|---|---|---|")
  for model, r in rows:
    print(f"| {model} | {r['rc']} | {r['seconds']:.1f} | {r['checkpoint_step']} | {r['step_seconds']:.2f} |")


if __name__ == "__main__":
  app.run(main)
