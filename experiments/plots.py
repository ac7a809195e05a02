"""The paper's figures from run histories: test accuracy per epoch, and memorisation of noisy labels.

Each takes `{loss: [metrics of seed 0, metrics of seed 1, ...]}`, each metrics a list of the per-epoch
records of `metrics.jsonl`, and writes a PNG. Curves are the mean over seeds, shaded +- one std.
`experiments.report --plots DIR` draws them for every noise setting under a sweep's root. Besides the
paper's: what becomes of the corrupted training examples (memorised, corrected, other; Wei et al. 2022,
Figure 6) and how well the training loss tells them from clean ones (AUROC), from records that have
those fields.
"""

import numpy as np

# One colour per loss across every figure (the paper's order first).
_COLORS = {}


def _color(loss: str):
  import matplotlib  # pylint: disable=g-import-not-at-top

  if loss not in _COLORS:
    _COLORS[loss] = matplotlib.colormaps["tab10"](len(_COLORS) % 10)
  return _COLORS[loss]


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  return plt


def curve(histories: list[list[dict]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(epochs, mean, std) of `key` over seeds, at each epoch that at least one seed reached."""
  epochs = sorted({r["epoch"] for h in histories for r in h})
  per_epoch = [[r[key] for h in histories for r in h if r["epoch"] == e] for e in epochs]
  return (
    np.array(epochs),
    np.array([np.mean(v) for v in per_epoch]),
    np.array([np.std(v) for v in per_epoch]),
  )


def _band(ax, histories, key, label, color, linestyle="-", scale=100):
  x, mean, std = curve(histories, key)
  # A marker when there are few points: a one-epoch curve is otherwise invisible.
  marker = "o" if len(x) <= 20 else None
  ax.plot(x, scale * mean, linestyle, color=color, label=label, linewidth=1.5, marker=marker, markersize=3)
  if len(histories) > 1:
    ax.fill_between(x, scale * (mean - std), scale * (mean + std), color=color, alpha=0.15, linewidth=0)


def _save_per_epoch(fig, ax, ylabel: str, title: str, path: str) -> str:
  """Labels a one-panel per-epoch figure (integer epochs, grid, legend), saves it to `path`, closes it."""
  ax.xaxis.get_major_locator().set_params(integer=True)
  ax.set_xlabel("epoch")
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  _pyplot().close(fig)
  return path


def test_accuracy(
  runs: dict[str, list[list[dict]]],
  path: str,
  title: str,
  *,
  key: str = "test_acc",
  ylabel: str = "clean test accuracy",
) -> str:
  """Clean test accuracy per epoch, one curve per loss (the paper's Figures 1-4); `key` another
  accuracy of the records (e.g. test_acc_imagenet_val), `ylabel` its name on the y axis."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 4.2))
  for loss, histories in runs.items():
    n = len(histories)
    _band(ax, histories, key, f"{loss.upper()} ({n} seed{'s' * (n != 1)})", _color(loss))
  return _save_per_epoch(fig, ax, f"{ylabel} (%)", title, path)


def memorisation(runs: dict[str, list[list[dict]]], path: str, title: str) -> str:
  """Train accuracy against the noisy labels (dashed) and the clean labels (solid), per epoch.

  A loss that memorises the noise climbs on the noisy labels while its accuracy on the clean labels
  (and on the test set) falls; a robust loss stays near the clean labels.
  """
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 4.2))
  for loss, histories in runs.items():
    _band(ax, histories, "train_acc_clean", f"{loss.upper()} vs clean labels", _color(loss), "-")
    _band(ax, histories, "train_acc_noisy", f"{loss.upper()} vs noisy labels", _color(loss), "--")
  ax.xaxis.get_major_locator().set_params(integer=True)
  ax.set_xlabel("epoch")
  ax.set_ylabel("train accuracy (%)")
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


# The fates of the corrupted training examples (noisy label != clean label): the prediction is the noisy
# label, the clean label, or neither. Fractions of the corrupted examples, per epoch.
CORRUPTED = ("train_corrupted_memorised", "train_corrupted_corrected", "train_corrupted_other")
_FATES = {
  "train_corrupted_memorised": ("memorised (= noisy label)", "tab:red"),
  "train_corrupted_corrected": ("corrected (= clean label)", "tab:green"),
  "train_corrupted_other": ("other", "tab:gray"),
}


def corrupted_examples(runs: dict[str, list[list[dict]]], path: str, title: str) -> str:
  """One panel per loss: the share of the corrupted training examples predicted as their noisy label
  (memorised), their clean label (corrected) or neither, per epoch (Wei et al. 2022, Figure 6).

  A loss that memorises the noise moves examples from corrected to memorised as training goes on.
  """
  plt = _pyplot()
  cols = min(len(runs), 4)
  rows = -(-len(runs) // cols)
  fig, axes = plt.subplots(
    rows, cols, figsize=(3.4 * cols, 2.9 * rows), sharex=True, sharey=True, squeeze=False
  )
  for ax, (loss, histories) in zip(axes.flat, runs.items()):
    for key in CORRUPTED:
      _band(ax, histories, key, _FATES[key][0], _FATES[key][1])
    n = len(histories)
    ax.set_title(f"{loss.upper()} ({n} seed{'s' * (n != 1)})", fontsize=9)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
  for i, ax in enumerate(axes.flat):
    if i >= len(runs):
      ax.axis("off")
    elif i + cols >= len(runs):  # The lowest panel of its column.
      ax.set_xlabel("epoch")
      ax.tick_params(labelbottom=True)
      ax.xaxis.get_major_locator().set_params(integer=True)
  for ax in axes[:, 0]:
    ax.set_ylabel("corrupted train examples (%)")
  axes.flat[0].legend(fontsize=7)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def loss_auroc(runs: dict[str, list[list[dict]]], path: str, title: str) -> str:
  """The AUROC of the per-example training loss for telling corrupted from clean training examples
  (`train_loss_auroc`), per epoch, one curve per loss; 0.5 is chance."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 4.2))
  for loss, histories in runs.items():
    n = len(histories)
    label = f"{loss.upper()} ({n} seed{'s' * (n != 1)})"
    _band(ax, histories, "train_loss_auroc", label, _color(loss), scale=1)
  ax.axhline(0.5, color="black", linewidth=0.8, linestyle=":")
  return _save_per_epoch(fig, ax, "training-loss AUROC, corrupted vs clean", title, path)
