r"""The paper's Tables 2-5 (and Figures 1-4) from a sweep's workdirs, with the paper's numbers beside ours.

  python -m experiments.report --root runs/mnist --out results/mnist/table.md --plots results/mnist

Reads every workdir under --root (config.json + metrics.jsonl, as `experiments.sweep` lays them out),
groups finished runs by (dataset, protocol, noise, rate, loss) over seeds and writes one markdown table
per dataset and protocol: rows are losses in the paper's order, columns are noise settings, and each
setting has three columns: ours (last-epoch clean test accuracy in %, mean +- std over n seeds, the top 2
of the column in bold), the paper's (experiments/configs/paper_tables.csv) and the difference.
Unfinished and missing runs are listed under the table, never dropped silently; a protocol other than
the paper's (a training subset, fewer epochs) is stated above it. --plots DIR adds, per noise setting,
test accuracy per epoch for every loss and train accuracy on noisy vs clean labels.
"""

import collections
from collections.abc import Iterable, Sequence
import csv
import itertools
import os
from typing import NamedTuple

from absl import app, flags
import numpy as np

from aplx import rundir
from experiments import sweep

PAPER_TABLES = os.path.join(os.path.dirname(__file__), "configs", "paper_tables.csv")
PAPER_ORDER = ("ce", "fl", "gce", "nlnl", "sce", "nfl+mae", "nfl+rce", "nce+mae", "nce+rce")
# The paper's protocol per dataset: training images, epochs (Section 5.1).
PAPER_PROTOCOL = {
  "mnist": (60000, 50),
  "cifar10": (50000, 120),
  "cifar100": (50000, 200),
  "webvision": (None, 250),
}
NOISE_ORDER = ("clean", "sym", "asym", "real")


class RunInfo(NamedTuple):
  """One workdir: its setting (from config.json, else from its path) and its per-epoch metrics."""

  workdir: str
  dataset: str | None
  subset: int | None
  epochs: int | None
  noise: str  # 'clean' for noise=none, as in the paper's tables.
  rate: float
  loss: str
  seed: int
  metrics: list
  status: str  # sweep.FINISHED / PARTIAL / MISSING
  detail: str

  @property
  def setting(self) -> tuple[str, float]:
    return (self.noise, self.rate)

  @property
  def protocol(self) -> tuple[str | None, int | None, int | None]:
    return (self.dataset, self.subset, self.epochs)

  @property
  def last_test_acc(self) -> float:
    return 100 * self.metrics[-1]["test_acc"]


# ---------------------------------------------------------------------------------------------------
# Reading workdirs.
# ---------------------------------------------------------------------------------------------------


def _paper_noise(noise: str) -> str:
  return "clean" if noise == "none" else noise


def _parse_path(root: str, workdir: str) -> tuple[str, float, str, int] | None:
  """(noise, rate, loss, seed) from `<root>/<noise><rate>/<loss>/seed<seed>`, or None if not that layout."""
  parts = os.path.relpath(workdir, root).split(os.sep)
  if len(parts) != 3 or not parts[2].startswith("seed") or not parts[2][4:].isdigit():
    return None
  head = parts[0].rstrip("0123456789.")
  try:
    rate = float(parts[0][len(head) :])
  except ValueError:
    return None
  return _paper_noise(head), rate, parts[1], int(parts[2][4:])


def read_run(root: str, workdir: str) -> RunInfo | None:
  """A workdir's settings, metrics and status; None for a directory that is not a run."""
  config = rundir.read_config(workdir)
  status, detail = sweep.run_status(workdir)
  if config is None:
    parsed = _parse_path(root, workdir)
    if parsed is None:
      return None
    noise, rate, loss, seed = parsed
    return RunInfo(workdir, None, None, None, noise, rate, loss, seed, [], status, detail)
  return RunInfo(
    workdir,
    config["dataset"],
    config.get("subset") or None,
    config["epochs"],
    _paper_noise(config["noise"]["type"]),
    float(config["noise"]["rate"]),
    config["loss"]["name"],
    int(config["seed"]),
    rundir.read_metrics(workdir),
    status,
    detail,
  )


def collect(root: str) -> list[RunInfo]:
  """Every run under `root`: directories with a config.json, and sweep-layout directories without one."""
  runs = []
  for dirpath, dirnames, filenames in os.walk(root):
    if "config.json" in filenames or _parse_path(root, dirpath) is not None:
      run = read_run(root, dirpath)
      if run is not None:
        runs.append(run)
        dirnames[:] = []  # Don't descend into checkpoints/ and tensorboard/.
  return sorted(runs, key=lambda r: r.workdir)


def expected_missing(runs: Sequence[RunInfo], root: str, grid: str = "") -> list[str]:
  """Workdirs of expected runs that do not exist: the --grid's points, or else, per dataset and
  protocol, every combination of the losses, settings and seeds that exist."""
  have = {os.path.normpath(r.workdir) for r in runs}
  if grid:
    return [run.workdir for run in sweep.expand(grid, "", root) if os.path.normpath(run.workdir) not in have]
  missing = []
  for _, group in _groups(runs).items():
    settings = sorted({r.setting for r in group})
    losses = sorted({r.loss for r in group})
    seeds = sorted({r.seed for r in group})
    for (noise, rate), loss, seed in itertools.product(settings, losses, seeds):
      workdir = sweep.workdir_for(
        root, {"noise": "none" if noise == "clean" else noise, "rate": rate, "loss": loss, "seed": seed}
      )
      if os.path.normpath(workdir) not in have:
        missing.append(workdir)
  return sorted(set(missing))


def _groups(runs: Iterable[RunInfo]) -> dict[tuple, list[RunInfo]]:
  """Runs with a config.json, by (dataset, subset, epochs): one table each."""
  out = collections.defaultdict(list)
  for r in runs:
    if r.dataset is not None:
      out[r.protocol].append(r)
  return dict(sorted(out.items(), key=lambda kv: tuple(str(x) for x in kv[0])))


# ---------------------------------------------------------------------------------------------------
# The paper's numbers.
# ---------------------------------------------------------------------------------------------------


def load_paper(path: str = PAPER_TABLES) -> dict[tuple[str, str, float | None, str], dict]:
  """{(dataset, noise, rate, loss): {'table', 'mean', 'std'}} from paper_tables.csv (std None if empty)."""
  out = {}
  with open(path) as f:
    for row in csv.DictReader(f):
      rate = float(row["rate"]) if row["rate"] else None
      out[(row["dataset"], row["noise"], rate, row["loss"])] = {
        "table": row["table"],
        "mean": float(row["mean"]),
        "std": float(row["std"]) if row["std"] else None,
      }
  return out


def paper_cell(paper: dict, dataset: str, noise: str, rate: float, loss: str) -> dict | None:
  if dataset == "webvision":  # Table 5: the web's own labels, no rate.
    return paper.get((dataset, "real", None, loss))
  return paper.get((dataset, noise, round(rate, 6), loss))


# ---------------------------------------------------------------------------------------------------
# The table.
# ---------------------------------------------------------------------------------------------------


def loss_order(losses: Iterable[str]) -> list[str]:
  """The paper's row order, then any other loss alphabetically."""
  losses = set(losses)
  return [l for l in PAPER_ORDER if l in losses] + sorted(losses - set(PAPER_ORDER))


def setting_order(settings: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
  rank = {n: i for i, n in enumerate(NOISE_ORDER)}
  return sorted(set(settings), key=lambda s: (rank.get(s[0], len(rank)), s[0], s[1]))


def setting_label(setting: tuple[str, float]) -> str:
  noise, rate = setting
  return noise if noise == "clean" else f"{noise} {format(rate, 'g')}"


def setting_slug(setting: tuple[str, float]) -> str:
  noise, rate = setting
  return f"{'none' if noise == 'clean' else noise}{format(rate, 'g')}"


def aggregate(runs: Iterable[RunInfo]) -> dict[tuple[str, tuple[str, float]], dict]:
  """{(loss, setting): {'mean', 'std', 'n', 'accs'}} over the finished runs' last-epoch test accuracy (%).

  std is the population std over seeds (numpy's default, ddof=0).
  """
  accs = collections.defaultdict(list)
  for r in runs:
    if r.status == sweep.FINISHED:
      accs[(r.loss, r.setting)].append(r.last_test_acc)
  return {
    k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v), "accs": v} for k, v in accs.items()
  }


def top2(values: dict[str, float]) -> set[str]:
  """Keys of the two highest values as printed (2 decimals); ties with the second are all bold."""
  rounded = {k: round(v, 2) for k, v in values.items()}
  if not rounded:
    return set()
  ranked = sorted(rounded.values(), reverse=True)
  cut = ranked[min(1, len(ranked) - 1)]
  return {k for k, v in rounded.items() if v >= cut}


def protocol_note(dataset: str, subset: int | None, epochs: int) -> str | None:
  """A line stating how this protocol differs from the paper's, or None if it is the paper's."""
  paper_n, paper_epochs = PAPER_PROTOCOL.get(dataset, (None, None))
  if not subset and (paper_epochs is None or epochs == paper_epochs):
    return None
  ours = [
    f"{subset // 1000}k-image subset"
    if subset and subset % 1000 == 0
    else f"{subset}-image subset"
    if subset
    else "full training set",
    f"{epochs} epochs",
  ]
  paper = ("" if paper_n is None else f"{paper_n // 1000}k/") + (
    f"{paper_epochs} epochs" if paper_epochs else "the paper's epochs"
  )
  return (
    f"**Not the paper's protocol: {', '.join(ours)} — not the paper's {paper}.** "
    "Compare with the paper's numbers only with that in mind."
  )


def render_table(runs: Sequence[RunInfo], paper: dict) -> str:
  """One markdown table for runs of one (dataset, subset, epochs) protocol."""
  dataset, subset, epochs = runs[0].protocol
  stats = aggregate(runs)
  settings = setting_order(r.setting for r in runs)
  losses = loss_order(r.loss for r in runs)
  tables = sorted({p["table"] for s in settings for l in losses if (p := paper_cell(paper, dataset, *s, l))})
  lines = [f"## {dataset}: last-epoch clean test accuracy (%)", ""]
  note = protocol_note(dataset, subset, epochs)
  lines += [f"> {note}" if note else f"Protocol: the paper's (full training set, {epochs} epochs).", ""]
  header = ["loss"] + [h for s in settings for h in (f"{setting_label(s)} ours", "paper", "Δ")]
  lines += ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
  bold = {s: top2({l: stats[(l, s)]["mean"] for l in losses if (l, s) in stats}) for s in settings}
  for loss in losses:
    cells = [loss.upper()]
    for s in settings:
      st, p = stats.get((loss, s)), paper_cell(paper, dataset, *s, loss)
      if st is None:
        unfinished = sum(r.loss == loss and r.setting == s for r in runs)
        cells.append(f"— ({unfinished} unfinished)" if unfinished else "")
      else:
        value = f"{st['mean']:.2f}" + (f" ± {st['std']:.2f}" if st["n"] > 1 else "")
        cells.append((f"**{value}**" if loss in bold[s] else value) + f" ({st['n']})")
      cells.append(
        "" if p is None else f"{p['mean']:.2f}" + (f" ± {p['std']:.2f}" if p["std"] is not None else "")
      )
      if st is None or p is None:
        cells.append("")
      else:
        diff = st["mean"] - p["mean"]
        cells.append(f"{diff:+.2f}" + (" †" if p["std"] is not None and abs(diff) > p["std"] else ""))
    lines.append("| " + " | ".join(cells) + " |")
  lines += [
    "",
    f"ours: mean ± std (population, ddof=0) over (n) finished seeds, top 2 of each setting in "
    f"bold. paper: Ma et al. 2020, Table{'s' * (len(tables) > 1)} {', '.join(tables) or '—'} "
    "(mean ± std of 3 runs). Δ = ours − paper; † marks |Δ| larger than the paper's std.",
  ]
  return "\n".join(lines)


def render_unfinished(runs: Sequence[RunInfo], missing: Sequence[str]) -> str:
  lines = []
  for r in runs:
    if r.status != sweep.FINISHED:
      lines.append(f"- {r.status}: `{r.workdir}` — {r.detail} (log `{r.workdir}.log`)")
  lines += [f"- missing: `{w}` — no workdir" for w in missing]
  if not lines:
    return "All expected runs finished; none left out." if runs else "No runs found."
  return "\n".join(
    [f"**Left out of the means: {len(lines)} run{'s' * (len(lines) != 1)} unfinished or missing.**", ""]
    + lines
  )


def render(runs: Sequence[RunInfo], missing: Sequence[str], paper: dict) -> str:
  groups = _groups(runs)
  parts = [render_table(group, paper) for group in groups.values()]
  if not groups:
    parts.append("No run with a config.json found.")
  parts.append(render_unfinished(runs, missing))
  return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------------
# Figures.
# ---------------------------------------------------------------------------------------------------


def write_plots(
  runs: Sequence[RunInfo], out_dir: str, memorisation_losses: Sequence[str] = ("ce", "nce+rce")
) -> list[str]:
  """Per protocol and noise setting: test accuracy per epoch (all losses) and memorisation."""
  from experiments import plots  # pylint: disable=g-import-not-at-top

  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for (dataset, subset, epochs), group in _groups(runs).items():
    paper = protocol_note(dataset, subset, epochs) is None
    prefix = dataset + ("" if paper else f"_{'n%d_' % subset if subset else ''}e{epochs}")
    protocol = "paper protocol" if paper else (f"{subset} images, " if subset else "") + f"{epochs} epochs"
    for s in setting_order(r.setting for r in group):
      by_loss = {
        l: [r.metrics for r in group if r.loss == l and r.setting == s and r.metrics]
        for l in loss_order(r.loss for r in group)
      }
      by_loss = {l: h for l, h in by_loss.items() if h}
      if not by_loss:
        continue
      title = f"{dataset} {setting_label(s)} ({protocol})"
      paths.append(
        plots.test_accuracy(by_loss, os.path.join(out_dir, f"{prefix}_{setting_slug(s)}_test_acc.png"), title)
      )
      chosen = {l: by_loss[l] for l in memorisation_losses if l in by_loss}
      if chosen:
        paths.append(
          plots.memorisation(
            chosen, os.path.join(out_dir, f"{prefix}_{setting_slug(s)}_memorisation.png"), title
          )
        )
  return paths


def report(
  root: str,
  out: str | None = None,
  plots_dir: str | None = None,
  grid: str = "",
  memorisation_losses: Sequence[str] = ("ce", "nce+rce"),
  paper_csv: str = PAPER_TABLES,
) -> str:
  """Reads `root`, writes the markdown to `out` (and figures to `plots_dir`); returns the markdown."""
  runs = collect(root)
  text = render(runs, expected_missing(runs, root, grid), load_paper(paper_csv))
  if plots_dir:
    paths = write_plots(runs, plots_dir, memorisation_losses)
    base = os.path.dirname(os.path.abspath(out)) if out else os.getcwd()
    text += (
      "\n## Figures\n\n"
      + "\n".join(f"![{os.path.basename(p)}]({os.path.relpath(os.path.abspath(p), base)})" for p in paths)
      + "\n"
    )
  if out:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
      f.write(text)
  return text


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments {argv[1:]}.")
  if not _ROOT.value:
    raise app.UsageError("--root is required.")
  print(report(_ROOT.value, _OUT.value, _PLOTS.value, _GRID.value, _MEMORISATION.value), end="")


if __name__ == "__main__":
  # Flags only for the command line: experiments.report and the tests import this module.
  _ROOT = flags.DEFINE_string(
    "root", None, "Root of a sweep's workdirs (<root>/<noise><rate>/<loss>/seed<n>)."
  )
  _OUT = flags.DEFINE_string("out", None, "Markdown file to write (the table is printed either way).")
  _PLOTS = flags.DEFINE_string("plots", None, "Directory for the PNG figures (none when unset).")
  _GRID = flags.DEFINE_string(
    "grid",
    "",
    "The sweep's --grid: every grid point without a finished run is "
    "listed as missing. Without it, the expected runs are every combination of "
    "the losses, settings and seeds found under --root.",
  )
  _MEMORISATION = flags.DEFINE_list(
    "memorisation_losses", ["ce", "nce+rce"], "Losses in the noisy-vs-clean train accuracy figures."
  )
  app.run(main)
