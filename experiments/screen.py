r"""The collapse screen: many short runs stopped on purpose, tabled by how often they lose a class.

  python -m experiments.screen --root /work/runs/screen --root /work/runs/screen_paper \
      --root /work/runs/screen_torch --out results/screen.md

A screen trains many seeds for a few epochs to see how often a loss loses a class early: aplx's runs
stop at config.max_steps (`experiments.sweep --fixed max_steps=N`), the authors' PyTorch harness's at
max_epochs. They are not results: `experiments.report` leaves them out of its tables.

Reads every run directory under each --root (the sweep's layout, `experiments.report.collect`). A row
per root, code, setting and loss: the runs that reached their stop (done; a run still training, or
interrupted, is listed under the table and not counted); how many done runs lose a class (clean test
accuracy below 10%, `experiments.per_class`) at their last recorded epoch; which classes, in how many
runs, and for each such run the epoch at which that class was first below 10%; the done runs'
last-epoch test accuracy, mean +- std (population, ddof=0).

The code column: "aplx (fidelity=authors)" or "aplx (fidelity=paper)" for aplx's run directories
(`fidelity`), "authors' PyTorch" for the harness's (config.json {"code": "authors-pytorch", ...}).
"""

import collections
from collections.abc import Iterable, Sequence
import functools
import itertools
import os

from absl import app, flags
import numpy as np

from aplx import rundir
from experiments import per_class, report, sweep
from experiments.configs import common

CONFIGS = os.path.join(os.path.dirname(__file__), "configs")
FIDELITIES = ("authors", "paper")
CODE_LABELS = {"authors-pytorch": "authors' PyTorch"}


@functools.cache
def _config_file(dataset: str):
  path = os.path.join(CONFIGS, f"{dataset}.py")
  return common.load_config_file(path) if os.path.exists(path) else None


def fidelity(config: dict) -> str | None:
  """'authors' or 'paper': the config argument's fidelity that an aplx config.json was made with.

  config.json holds the config, not the argument, and fidelity changes several fields at once (the
  dataset's config file: weight decay, loss parameters, the noise procedure, drop_remainder, ...). So
  the dataset's config file is built for this run's loss, noise, rate, seeds, subset and epochs with
  each fidelity, and the one whose config differs from config.json in fewer fields wins
  (`aplx.rundir.config_diff`, which ignores max_steps and the other resumable fields; an override such
  as --config.optim.lr differs from both alike). None without a config file for the dataset, or on a tie.
  """
  module = _config_file(config.get("dataset"))
  if module is None:
    return None
  args = {
    "loss": config["loss"]["name"],
    "noise": config["noise"]["type"],
    "rate": config["noise"]["rate"],
    "seed": config["seed"],
    "noise_seed": config["noise"]["seed"],
    "subset": config.get("subset"),
    "epochs": config["epochs"],
  }
  arg = ",".join(f"{k}={v}" for k, v in args.items() if v is not None)
  try:
    diffs = {
      f: len(rundir.config_diff(config, sweep.expected_config(module, f"{arg},fidelity={f}")))
      for f in FIDELITIES
    }
  except (ValueError, KeyError):  # A loss or noise its config file does not know.
    return None
  fewest = min(diffs.values())
  winners = [f for f, n in diffs.items() if n == fewest]
  return winners[0] if len(winners) == 1 else None


def code_label(run: report.RunInfo) -> str:
  """'aplx (fidelity=authors)', 'aplx (fidelity=paper)' (or '=?'), or another code's label."""
  if run.code != report.APLX:
    return CODE_LABELS.get(run.code, run.code)
  return f"aplx (fidelity={fidelity(run.config) or '?'})"


# ---------------------------------------------------------------------------------------------------
# Collect and count.
# ---------------------------------------------------------------------------------------------------


def collect(
  roots: Iterable[str],
) -> tuple[list[tuple[str, report.RunInfo]], list[tuple[str, report.RunInfo]]]:
  """([(root, screen run), ...], [(root, any other run), ...]), in root order."""
  screens, others = [], []
  for root in roots:
    for r in report.collect(root):
      (screens if r.screen else others).append((root, r))
  return screens, others


def summarise(screens: Iterable[tuple[str, report.RunInfo]]) -> dict[tuple, dict]:
  """{(root, code label, setting, row): entry} with 'done' and 'not_done' (runs, in workdir order);
  over the done runs: 'lost' (`per_class.lost` of each last record), 'first_lost' ({class: [the epoch
  each run that lost it at its last epoch first had it below 10%]}), 'acc' (last-epoch test accuracy
  stats, %; None without done runs) and 'last_epochs'."""
  cells = collections.defaultdict(list)
  for root, r in screens:
    cells[(root, code_label(r), r.setting, r.row)].append(r)
  out = {}
  for key, runs in cells.items():
    done = [r for r in runs if r.status == report.SCREENED and r.metrics]
    not_done = [r for r in runs if not (r.status == report.SCREENED and r.metrics)]
    lost = [per_class.lost(r.metrics[-1]) for r in done]
    first_lost = collections.defaultdict(list)
    for r, classes in zip(done, lost):
      for c in classes or ():
        first_lost[c].append(per_class.first_lost(r.metrics, c))
    accs = [100 * r.metrics[-1]["test_acc"] for r in done]
    out[key] = {
      "done": done,
      "not_done": not_done,
      "lost": lost,
      "first_lost": dict(sorted(first_lost.items())),
      "acc": {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "n": len(accs)} if accs else None,
      "last_epochs": sorted({r.metrics[-1]["epoch"] for r in done}),
    }
  return out


# ---------------------------------------------------------------------------------------------------
# Markdown.
# ---------------------------------------------------------------------------------------------------


def _lost_cells(entry: dict) -> tuple[str, str]:
  """('3/10', '5: 3 (first lost at epochs 2, 3, 3); 7: 1 (epoch 4)') for a summary entry."""
  counts, known = per_class.lost_counts(entry["lost"])
  if not known:
    return "n/a", "n/a"
  unknown = len(entry["lost"]) - known
  runs = sum(bool(classes) for classes in entry["lost"] if classes is not None)
  share = f"{runs}/{known}" + (f" (+{unknown} without per-class data)" if unknown else "")
  classes = "; ".join(
    f"{c}: {k} (first lost at epoch{'s' * (k != 1)} {', '.join(map(str, entry['first_lost'][c]))})"
    for c, k in counts.items()
  )
  return share, classes


def render(
  screens: Sequence[tuple[str, report.RunInfo]],
  others: Sequence[tuple[str, report.RunInfo]] = (),
  roots: Sequence[str] = (),
) -> str:
  """The screen table (`collect`'s two lists), its note, then the runs not counted and the `roots`
  without any run."""
  seen = {root for root, _ in [*screens, *others]}
  empty = [root for root in roots if root not in seen]
  empty = [f"No run under {', '.join(f'`{root}`' for root in empty)}."] if empty else []
  if not screens:
    none = "No screen runs (stopped on purpose at config.max_steps or max_epochs) found."
    return "\n\n".join([none, *empty]) + "\n"
  entries = summarise(screens)
  order = list(dict.fromkeys(root for root, _ in screens))
  settings = report.setting_order(r.setting for _, r in screens)
  rows = [
    (l, v)
    for l in report.loss_order(r.loss for _, r in screens)
    for v in sorted({r.variant for _, r in screens})
  ]
  codes = sorted({key[1] for key in entries})
  header = ["root", "code", "setting", "loss", "done", "lost a class", "classes lost", "test acc, last"]
  header += ["last epoch", "not done"]
  lines = ["## Collapse screen", ""]
  lines += ["| " + " | ".join(header) + " |", "|---|---|---|---|" + "---:|" * 2 + "---|" + "---:|" * 3]
  for root, code, s, row in itertools.product(order, codes, settings, rows):
    e = entries.get((root, code, s, row))
    if e is None:
      continue
    share, classes, acc, epochs = "—", "—", "—", "—"
    if e["done"]:
      share, classes = _lost_cells(e)
      acc = report.mean_std(e["acc"])
      first, last = e["last_epochs"][0], e["last_epochs"][-1]
      epochs = str(first) if first == last else f"{first}–{last}"
    cells = [f"`{root}`", code, report.setting_label(s), report.row_label(row), str(len(e["done"]))]
    cells += [share, classes, acc, epochs, str(len(e["not_done"]))]
    lines.append("| " + " | ".join(cells) + " |")
  lines += [
    "",
    "done: runs that reached their stop (config.max_steps for aplx, max_epochs for the harness). lost a "
    f"class: done runs with a class below {100 * per_class.LOST_BELOW:g}% clean test accuracy at their "
    "last recorded epoch, of those with per-class accuracies (test_acc_per_class). classes lost: per "
    "class (numbered from 0), how many runs lost it, and the epoch at which each of them first had it "
    "below that (it may have recovered and been lost again since). test acc: the done runs' last-epoch "
    "clean test accuracy (%), mean ± std (population, ddof=0). not done: still training or interrupted, "
    "not counted (listed below).",
  ]
  not_done = [r for e in entries.values() for r in e["not_done"]]
  if not_done:
    lines += ["", f"**Not done, not counted: {len(not_done)} run{'s' * (len(not_done) != 1)}.**", ""]
    lines += [f"- {r.status}: `{r.workdir}` — {r.detail}" for r in sorted(not_done, key=lambda r: r.workdir)]
  if others:
    what = "full runs, or runs without a config.json yet"
    lines += ["", f"**Other runs under these roots, not counted ({what}): {len(others)}.**", ""]
    lines += [f"- {r.status}: `{r.workdir}` — {r.detail}" for _, r in others]
  if empty:
    lines += ["", *empty]
  return "\n".join(lines) + "\n"


def _run_cell(r: report.RunInfo) -> str:
  """'88.46, lost 5' or '97.40, lowest 3: 88.1%' for a done run's last record."""
  record = r.metrics[-1]
  acc = f"{100 * record['test_acc']:.2f}"
  classes = per_class.lost(record)
  if classes is None:
    return acc
  if classes:
    return f"{acc}, **lost {', '.join(map(str, classes))}**"
  values = record[per_class.KEY]
  low = min((v, c) for c, v in enumerate(values) if v is not None)
  return f"{acc}, lowest {low[1]}: {100 * low[0]:.1f}%"


def render_by_seed(screens: Sequence[tuple[str, report.RunInfo]]) -> str:
  """Side by side per initialisation seed: a table per setting and loss, a row per seed, a column per
  code (and root), each cell the done run's last-epoch test accuracy and its lost (or lowest) class."""
  done = [(root, r) for root, r in screens if r.status == report.SCREENED and r.metrics]
  lines = ["## Per seed, side by side", ""]
  for s in report.setting_order(r.setting for _, r in done):
    for row in sorted(
      {r.row for _, r in done if r.setting == s}, key=lambda row: report.loss_order([row[0]])
    ):
      runs = [(root, r) for root, r in done if r.setting == s and r.row == row]
      columns = list(dict.fromkeys((root, code_label(r)) for root, r in runs))
      cells = {(root, code_label(r), r.seed, r.noise_seed): _run_cell(r) for root, r in runs}
      keys = sorted({(r.seed, r.noise_seed) for _, r in runs}, key=lambda k: (k[0], k[1] or 0))
      lines += [f"### {report.row_label(row)}, {report.setting_label(s)}", ""]
      lines += ["| seed | " + " | ".join(f"{code} (`{root}`)" for root, code in columns) + " |"]
      lines += ["|---|" + "---|" * len(columns)]
      for seed, noise_seed in keys:
        name = f"{seed}" + (f" (noise {noise_seed})" if noise_seed is not None else "")
        row_cells = [cells.get((root, code, seed, noise_seed), "—") for root, code in columns]
        lines.append(f"| {name} | " + " | ".join(row_cells) + " |")
      lines.append("")
  lines.append(
    "Each cell: the last recorded epoch's clean test accuracy (%), then the classes below "
    f"{100 * per_class.LOST_BELOW:g}% (lost) or the lowest class and its accuracy; —: no done run."
  )
  return "\n".join(lines) + "\n"


def screen(roots: Sequence[str], out: str | None = None) -> str:
  """Reads the roots, writes the markdown to `out` (the table, then the runs per seed); returns it."""
  screens, others = collect(roots)
  text = render(screens, others, roots)
  if screens:
    text += "\n" + render_by_seed(screens)
  report.write_markdown(text, out)
  return text


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments {argv[1:]}.")
  if not _ROOTS.value:
    raise app.UsageError("--root is required (one or more).")
  print(screen(_ROOTS.value, _OUT.value), end="")


if __name__ == "__main__":
  _ROOTS = flags.DEFINE_multi_string(
    "root", None, "A root of screen runs (<root>/<noise><rate>/<loss>/seed<k>[-noise<n>]); repeat it."
  )
  _OUT = flags.DEFINE_string("out", None, "Markdown file to write (the table is printed either way).")
  app.run(main)
