"""The headline of the paper in miniature: CE memorises noisy labels, NCE+RCE does not.

Trains the authors' MNIST CNN with their MNIST hyperparameters on a fixed 10,000-image subset of MNIST
with 80% symmetric label noise, once with CE and once with NCE+RCE, and prints the clean test accuracy of
both per epoch and a final comparison. On a 2-core CPU it takes about 10 minutes (README.md has a
recorded run). The subset and the 20 epochs make the memorisation visible within that budget; the full
setting (60k images, 50 epochs, Table 2) is `experiments/configs/mnist.py:loss=ce,noise=sym,rate=0.8`.
"""

import os
import time

from aplx import train
from experiments.configs import mnist

LOSSES = ("ce", "nce+rce")
ARG = "noise=sym,rate=0.8,subset=10000,epochs=20"


def run(workdir: str) -> dict[str, list[dict]]:
  history, start = {}, time.time()
  print(f"Demo: {len(LOSSES)} runs one after the other ({', '.join(LOSSES)}); rerunning resumes.", flush=True)
  for i, loss in enumerate(LOSSES):
    config = mnist.get_config(f"loss={loss},{ARG}")
    done = time.time() - start
    eta = f", demo ETA {train.format_duration(done / i * (len(LOSSES) - i))}" if i else ""
    print(
      f"\n=== run {i + 1}/{len(LOSSES)}: {loss}: {config.dataset}, {config.noise.type} noise "
      f"{config.noise.rate}, {config.subset} train images, {config.epochs} epochs -> "
      f"{os.path.join(workdir, loss)}{eta}",
      flush=True,
    )
    history[loss] = train.train_and_evaluate(config, os.path.join(workdir, loss))
  table = comparison_table(history)
  print(table, flush=True)
  out = os.path.join(workdir, "comparison.md")
  with open(out, "w") as f:
    f.write(table.lstrip() + "\n")
  print(
    f"\nDemo done in {train.format_duration(time.time() - start)}. The table above: {out}. "
    f"Per-epoch metrics: {os.path.join(workdir, '<loss>', 'metrics.jsonl')}. "
    f"TensorBoard: pip install tensorboard && tensorboard --logdir {workdir}",
    flush=True,
  )
  return history


def comparison_table(history: dict[str, list[dict]]) -> str:
  """Markdown table: clean test accuracy per epoch for each loss, then best and last."""
  names = list(history)
  lines = [
    "",
    "Clean test accuracy (%), MNIST 10k subset, 0.8 symmetric noise:",
    "",
    "| epoch | " + " | ".join(names) + " |",
    "|---|" + "---|" * len(names),
  ]
  epochs = max(len(h) for h in history.values())
  for e in range(epochs):
    cells = [f"{100 * history[n][e]['test_acc']:.2f}" if e < len(history[n]) else "" for n in names]
    lines.append(f"| {e + 1} | " + " | ".join(cells) + " |")
  for label, pick in (("best", max), ("last", lambda accs: accs[-1])):
    cells = [f"{100 * pick([r['test_acc'] for r in history[n]]):.2f}" if history[n] else "" for n in names]
    lines.append(f"| **{label}** | " + " | ".join(cells) + " |")
  noisy = [f"{100 * history[n][-1]['train_acc_noisy']:.1f}" if history[n] else "" for n in names]
  lines.append("| train acc on noisy labels, last | " + " | ".join(noisy) + " |")
  return "\n".join(lines)
