r"""The paper's Tables 2-5 (and Figures 1-4) from a sweep's workdirs, with the paper's numbers beside ours.

  python -m experiments.report --root runs/mnist --out results/mnist/table.md --plots results/mnist

  python -m experiments.report --root runs/sweep --select val               # select by validation accuracy

  python -m experiments.report --root runs/webvision --metric test_acc_imagenet_val          # Table 5

Reads every workdir under --root (config.json + metrics.jsonl, as `experiments.sweep` lays them out),
groups finished runs by (dataset, protocol, noise, rate, loss) over seeds and writes one markdown table
per dataset and protocol: rows are losses in the paper's order, columns are noise settings, and each
setting has three columns: ours (last-epoch clean test accuracy in %, mean +- std over n seeds, the top 2
of the column in bold), the paper's (experiments/configs/paper_tables.csv) and the difference.
Unfinished and missing runs are listed under the table, never dropped silently; a protocol other than
the paper's (a training subset, fewer epochs) is stated above it. --plots DIR adds, per noise setting,
test accuracy per epoch for every loss and train accuracy on noisy vs clean labels.

Hyperparameter variants (workdirs `<root>/<noise><rate>/<loss>/<path>=<v>,.../seed<k>`, the sweep's
config-path axes) are rows of their own with --select last (the default, the paper's protocol: the
last epoch). --select val (runs trained with config.val_fraction > 0) picks, per run, the epoch of
highest validation accuracy (ties: the earliest) and, per cell, the variant whose runs have the highest
validation accuracy averaged over their seeds (one setting for every seed, as one would deploy it), and
reports the test accuracy there beside the last epoch's. --val_labels noisy (default) validates on the
held-out examples' noisy labels, all a practitioner has; clean is an oracle, for analysis. A finished
run without validation metrics is listed as "no validation split" and left out, never read as last.

--metric names the per-epoch key of metrics.jsonl that the table (and the per-epoch figure) reports:
test_acc (the default) is the dataset's test split; test_acc_<name> an extra evaluation split that the
trainer writes when the prepared dataset has one (webvision: test_acc_imagenet_val, the ILSVRC2012
validation images of the paper's Table 5, after `prepare webvision --imagenet_val_dir`; clothing1m:
test_acc_clean_val). Finished runs without that key are an error, never left out silently.

Below the tables, the protocol card: per setting and loss (and variant), the last-epoch, best-epoch
and (with val_acc_* records) validation-selected test accuracy, each as mean +- std over its n seeds;
the lowest per-class clean test accuracy at the last epoch and the classes lost there (< 10%,
`experiments.per_class`); the last epoch's memorised fraction of the corrupted training examples and
the AUROC of the training loss for telling them apart, when the records have them; the paper's number.
--seeds N expects seeds 0..N-1 in every cell and lists the others as missing. --nocard leaves it out.

Runs stopped on purpose at config.max_steps (a collapse screen) and runs of another code (the authors'
PyTorch harness) are not results: they are left out of the tables and the missing list, counted in one
line, and tabled by `python -m experiments.screen`.
"""

import collections
from collections.abc import Iterable, Sequence
import csv
import itertools
import json
import os
from typing import NamedTuple

from absl import app, flags
import numpy as np

from aplx import rundir
from experiments import per_class, sweep

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
APLX = "aplx"
# A run that reached the config.max_steps (aplx) or max_epochs (harness) it was stopped at on purpose,
# before its last epoch: a screen, not a result (`experiments.screen`).
SCREENED = "screened"


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
  variant: str = ""  # The workdir's config-override component ('loss.params.beta=10'); '' for none.
  val_fraction: float = 0.0  # Held out of the training set for validation (config.val_fraction).
  noise_seed: int | None = None  # As the workdir's name gives it (None: drawn from `seed`).
  code: str = APLX  # config.json's "code" for another trainer's run ('authors-pytorch').
  screen: bool = False  # Stopped on purpose before its last epoch (config.max_steps / max_epochs).
  config: dict | None = None  # config.json as written.

  @property
  def setting(self) -> tuple[str, float]:
    return (self.noise, self.rate)

  @property
  def row(self) -> tuple[str, str]:
    return (self.loss, self.variant)

  @property
  def protocol(self) -> tuple[str | None, int | None, int | None, float]:
    return (self.dataset, self.subset, self.epochs, self.val_fraction)

  def last_acc(self, metric: str = "test_acc") -> float:
    """The last epoch's `metric` (a key of metrics.jsonl), in %."""
    return 100 * self.metrics[-1][metric]


# ---------------------------------------------------------------------------------------------------
# Reading workdirs.
# ---------------------------------------------------------------------------------------------------


def _paper_noise(noise: str) -> str:
  return "clean" if noise == "none" else noise


def _parse_path(root: str, workdir: str) -> tuple[str, float, str, str, int, int | None] | None:
  """(noise, rate, loss, variant, seed, noise seed) of a workdir of the sweep's layout
  (`sweep.parse_workdir`: `<root>/<noise><rate>/<loss>[/<path>=<value>,...]/seed<seed>[-noise<n>]`), or
  None if not that layout. `variant` is the config-override component as written ('' without one):
  variants are told apart by it."""
  parsed = sweep.parse_workdir(root, workdir)
  if parsed is None:
    return None
  noise, rate = parsed.setting
  variant = ",".join(f"{k}={v}" for k, v in parsed.overrides.items())
  return _paper_noise(noise), rate, parsed.loss, variant, parsed.seed, parsed.noise_seed


def _screen_status(workdir: str, config: dict, done: int) -> tuple[str, str] | None:
  """(SCREENED, detail) for an unfinished run that reached its config.max_steps; (PARTIAL, detail) for
  one still on its way there (or interrupted); None without max_steps. The trainer leaves status.json at
  'stopped' with the step it stopped at (`aplx.train.loop`; 'running' before that status existed); a
  run in progress has its start step there."""
  max_steps = config.get("max_steps")
  if max_steps is None:
    return None
  status = rundir.read_status(workdir)
  if status.get("status") in (rundir.STOPPED, rundir.RUNNING) and status.get("step", 0) >= max_steps:
    return SCREENED, f"stopped at max_steps {max_steps} (epoch {done})"
  state = status.get("status", "no status.json")
  return sweep.PARTIAL, f"epoch {done}, {state}, on its way to max_steps {max_steps}"


def _read_harness_run(workdir: str, config: dict, parsed: tuple | None) -> RunInfo:
  """A run directory of another trainer (the authors' PyTorch harness): config.json holds its flags
  {"code", "loss", "noise", "rate", "seed", "noise_seed", "epochs" (the schedule's), "max_epochs" (where
  it stops, when earlier), ...}; metrics.jsonl has aplx's record fields."""
  metrics = rundir.read_metrics(workdir)
  done = metrics[-1]["epoch"] if metrics else 0
  epochs, stop = int(config["epochs"]), config.get("max_epochs")
  screen = stop is not None and int(stop) < epochs
  if done >= epochs:
    status, detail = sweep.FINISHED, f"epoch {done}/{epochs}"
  elif screen and done >= int(stop):
    status, detail = SCREENED, f"stopped at max_epochs {stop} of {epochs}"
  else:
    status, detail = sweep.PARTIAL, f"epoch {done}/{stop if screen else epochs}"
  noise_seed = config.get("noise_seed")
  return RunInfo(
    workdir,
    config.get("dataset", "mnist"),
    config.get("subset") or None,
    epochs,
    _paper_noise(config["noise"]),
    float(config["rate"]),
    config["loss"],
    int(config["seed"]),
    metrics,
    status,
    detail,
    parsed[3] if parsed else "",
    noise_seed=None if noise_seed is None else int(noise_seed),
    code=config["code"],
    screen=screen,
    config=config,
  )


def read_run(root: str, workdir: str) -> RunInfo | None:
  """A workdir's settings, metrics and status; None for a directory that is not a run."""
  parsed = _parse_path(root, workdir)
  try:
    config, unreadable = rundir.read_config(workdir), None
  except json.JSONDecodeError:  # Being written (by a trainer that does not write it atomically).
    config, unreadable = None, (sweep.PARTIAL, "config.json does not parse yet (being written?)")
  if config is None:
    if parsed is None:
      return None
    status, detail = unreadable or sweep.run_status(workdir)
    noise, rate, loss, variant, seed, noise_seed = parsed
    return RunInfo(
      workdir, None, None, None, noise, rate, loss, seed, [], status, detail, variant, noise_seed=noise_seed
    )
  if "code" in config:
    return _read_harness_run(workdir, config, parsed)
  status, detail = sweep.run_status(workdir)
  metrics = rundir.read_metrics(workdir)
  done = metrics[-1]["epoch"] if metrics else 0
  screen = _screen_status(workdir, config, done) if done < config["epochs"] else None
  if screen:
    status, detail = screen
  return RunInfo(
    workdir,
    config["dataset"],
    config.get("subset") or None,
    config["epochs"],
    _paper_noise(config["noise"]["type"]),
    float(config["noise"]["rate"]),
    config["loss"]["name"],
    int(config["seed"]),
    metrics,
    status,
    detail,
    parsed[3] if parsed else "",
    float(config.get("val_fraction") or 0.0),
    parsed[5] if parsed else None,
    screen=bool(screen),
    config=config,
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


def expected_missing(
  runs: Sequence[RunInfo], root: str, grid: str = "", seeds: int | None = None
) -> list[str]:
  """Workdirs of expected runs that do not exist: the --grid's points, or else, per dataset and
  protocol, every combination of the losses, settings and seeds that exist; with `seeds`, the seeds
  0..seeds-1 (over each noise seed that exists) instead of those that exist."""
  have = {os.path.normpath(r.workdir) for r in runs}
  if grid:
    return [run.workdir for run in sweep.expand(grid, "", root) if os.path.normpath(run.workdir) not in have]
  missing = []
  for _, group in _groups(runs).items():
    settings = sorted({r.setting for r in group})
    rows = sorted({r.row for r in group})
    pairs = sorted({(r.seed, r.noise_seed) for r in group}, key=str)
    if seeds is not None:
      pairs = [(k, n) for n in sorted({n for _, n in pairs}, key=str) for k in range(seeds)]
    for (noise, rate), (loss, variant), (seed, noise_seed) in itertools.product(settings, rows, pairs):
      overrides = dict(item.split("=", 1) for item in variant.split(",")) if variant else None
      args = {"noise": "none" if noise == "clean" else noise, "rate": rate, "loss": loss, "seed": seed}
      workdir = sweep.workdir_for(root, args | {"noise_seed": noise_seed}, overrides)
      if os.path.normpath(workdir) not in have:
        missing.append(workdir)
  return sorted(set(missing))


def _groups(runs: Iterable[RunInfo]) -> dict[tuple, list[RunInfo]]:
  """Runs with a config.json, by (dataset, subset, epochs, val_fraction): one table each."""
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


# The metric each dataset's paper table reports (Table 5: the ILSVRC2012 validation images).
PAPER_METRIC = {"webvision": "test_acc_imagenet_val"}


def paper_cell(
  paper: dict, dataset: str, noise: str, rate: float, loss: str, metric: str = "test_acc"
) -> dict | None:
  """The paper's cell for a setting, or None (also when `metric` is not the one the paper reports)."""
  if metric != PAPER_METRIC.get(dataset, "test_acc"):
    return None
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


SELECT = ("last", "val")
VAL_LABELS = ("noisy", "clean")


def row_label(row: tuple[str, str]) -> str:
  loss, variant = row
  return loss.upper() + (f" [{variant}]" if variant else "")


def best_epoch(metrics: Sequence[dict], key: str) -> dict | None:
  """The record of the epoch with the highest `key` (ties: the earliest); None if no record has it."""
  scored = [r for r in metrics if key in r]
  return max(scored, key=lambda r: r[key]) if scored else None  # max keeps the first of equal values.


def metric_title(metric: str) -> str:
  """What the table's cells are: 'clean test accuracy' for test_acc, else the key itself."""
  return "clean test accuracy" if metric == "test_acc" else metric


# Why a run can lack an extra evaluation split's accuracy: how its dataset was prepared.
_METRIC_HINTS = {"test_acc_imagenet_val": "was the dataset prepared with --imagenet_val_dir?"}


def check_metric(runs: Iterable[RunInfo], metric: str) -> None:
  """Raises ValueError, naming the metric, a run and the keys it has, if a finished run lacks `metric`
  in any epoch's record (a table over the runs that have it would silently drop the others)."""
  finished = [r for r in runs if r.status == sweep.FINISHED and r.metrics]
  lacking = [r for r in finished if any(metric not in rec for rec in r.metrics)]
  if not lacking:
    return
  first = lacking[0]
  have = [k for k in first.metrics[-1] if k not in ("epoch", "step")]
  hint = _METRIC_HINTS.get(
    metric, "test_acc_<name> is written only for the evaluation splits the prepared dataset has."
  )
  raise ValueError(
    f"{metric} is not in {os.path.join(first.workdir, 'metrics.jsonl')} (it has {', '.join(have)}; "
    f"{len(lacking)} of {len(finished)} finished runs lack it): {hint} Or pick one of those with --metric."
  )


def _stats(accs: list[float]) -> dict:
  return {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "n": len(accs), "accs": accs}


def aggregate(
  runs: Iterable[RunInfo], select: str = "last", val_key: str = "val_acc_noisy", metric: str = "test_acc"
) -> dict[tuple[tuple[str, str], tuple[str, float]], dict]:
  """{(row, setting): stats} over the finished runs, accuracies in %; std is the population std over
  seeds (numpy's default, ddof=0). The accuracy reported is `metric` (the test accuracy, by default);
  a finished run without it is a ValueError (`check_metric`).

  select='last': a row (loss, variant) per hyperparameter variant; the last-epoch test accuracy.
  select='val': a row (loss, '') per loss. Per run, the epoch of highest `val_key` (`best_epoch`); per
  cell, the variant whose runs have the highest mean of that validation accuracy (ties: the first by
  name, '' first). Stats of the test accuracy at the selected epochs, plus 'last' (the same runs'
  last-epoch stats), 'variant', 'val' (its mean validation accuracy), 'epochs' (selected, per seed) and
  'variants' ({variant: (mean validation accuracy, n)}). Runs without `val_key` are left out.
  """
  runs = list(runs)
  check_metric(runs, metric)
  finished = [r for r in runs if r.status == sweep.FINISHED]
  if select == "last":
    accs = collections.defaultdict(list)
    for r in finished:
      accs[(r.row, r.setting)].append(r.last_acc(metric))
    return {k: _stats(v) for k, v in accs.items()}
  if select != "val":
    raise ValueError(f"select={select!r}: use one of {SELECT}.")
  cells = collections.defaultdict(lambda: collections.defaultdict(list))  # cell -> variant -> [(run, rec)]
  for r in finished:
    record = best_epoch(r.metrics, val_key)
    if record is not None:
      cells[((r.loss, ""), r.setting)][r.variant].append((r, record))
  out = {}
  for cell, variants in cells.items():
    scores = {v: float(np.mean([100 * rec[val_key] for _, rec in chosen])) for v, chosen in variants.items()}
    winner = max(sorted(scores), key=scores.get)
    chosen = sorted(variants[winner], key=lambda c: c[0].seed)
    out[cell] = _stats([100 * rec[metric] for _, rec in chosen]) | {
      "last": _stats([r.last_acc(metric) for r, _ in chosen]),
      "variant": winner,
      "val": scores[winner],
      "epochs": [rec["epoch"] for _, rec in chosen],
      "variants": {v: (scores[v], len(variants[v])) for v in sorted(scores)},
    }
  return out


def no_validation_split(runs: Iterable[RunInfo], val_key: str) -> list[RunInfo]:
  """Finished runs that have no `val_key` in their metrics (trained without config.val_fraction)."""
  return [r for r in runs if r.status == sweep.FINISHED and best_epoch(r.metrics, val_key) is None]


def top2(values: dict[str, float]) -> set[str]:
  """Keys of the two highest values as printed (2 decimals); ties with the second are all bold."""
  rounded = {k: round(v, 2) for k, v in values.items()}
  if not rounded:
    return set()
  ranked = sorted(rounded.values(), reverse=True)
  cut = ranked[min(1, len(ranked) - 1)]
  return {k for k, v in rounded.items() if v >= cut}


def protocol_note(dataset: str, subset: int | None, epochs: int, val_fraction: float = 0.0) -> str | None:
  """A line stating how this protocol differs from the paper's, or None if it is the paper's."""
  paper_n, paper_epochs = PAPER_PROTOCOL.get(dataset, (None, None))
  if not subset and not val_fraction and (paper_epochs is None or epochs == paper_epochs):
    return None
  ours = [
    f"{subset // 1000}k-image subset"
    if subset and subset % 1000 == 0
    else f"{subset}-image subset"
    if subset
    else "full training set",
    f"{epochs} epochs",
  ]
  if val_fraction:
    ours[0] += f" less {100 * val_fraction:g}% held out for validation"
  paper = ("" if paper_n is None else f"{paper_n // 1000}k/") + (
    f"{paper_epochs} epochs" if paper_epochs else "the paper's epochs"
  )
  return (
    f"**Not the paper's protocol: {', '.join(ours)} — not the paper's {paper}.** "
    "Compare with the paper's numbers only with that in mind."
  )


def protocol_label(dataset: str, subset: int | None, epochs: int, val_fraction: float = 0.0) -> str:
  """'paper protocol', or what differs from it: '10000 images, 20 epochs, 10% held out'."""
  if protocol_note(dataset, subset, epochs, val_fraction) is None:
    return "paper protocol"
  label = (f"{subset} images, " if subset else "") + f"{epochs} epochs"
  return label + (f", {100 * val_fraction:g}% held out" if val_fraction else "")


def mean_std(st: dict, digits: int = 2) -> str:
  """Mean ± std of a `_stats`, '50.00 ± 8.16' (the mean alone for one run)."""
  return f"{st['mean']:.{digits}f}" + (f" ± {st['std']:.{digits}f}" if st["n"] > 1 else "")


def _paper_text(p: dict | None) -> str:
  return "" if p is None else f"{p['mean']:.2f}" + (f" ± {p['std']:.2f}" if p["std"] is not None else "")


def render_table(
  runs: Sequence[RunInfo],
  paper: dict,
  select: str = "last",
  val_labels: str = "noisy",
  metric: str = "test_acc",
) -> str:
  """One markdown table of `metric` for runs of one (dataset, subset, epochs, val_fraction) protocol."""
  dataset, subset, epochs, val_fraction = runs[0].protocol
  val_key = f"val_acc_{val_labels}"
  stats = aggregate(runs, select, val_key, metric)
  settings = setting_order(r.setting for r in runs)
  by_val = select == "val"
  rows = [
    (loss, variant)
    for loss in loss_order(r.loss for r in runs)
    for variant in ([""] if by_val else sorted({r.variant for r in runs if r.loss == loss}))
  ]
  tables = sorted(
    {p["table"] for s in settings for loss, _ in rows if (p := paper_cell(paper, dataset, *s, loss, metric))}
  )
  what = metric_title(metric)
  if by_val:
    title = f"{what} (%) at the epoch of best validation accuracy ({val_labels} labels)"
  else:
    title = f"last-epoch {what} (%)"
  lines = [f"## {dataset}: {title}", ""]
  note = protocol_note(dataset, subset, epochs, val_fraction)
  lines += [f"> {note}" if note else f"Protocol: the paper's (full training set, {epochs} epochs).", ""]
  columns = ("ours", "last", "paper", "Δ") if by_val else ("ours", "paper", "Δ")
  header = ["loss"] + [f"{setting_label(s)} {c}" if c == "ours" else c for s in settings for c in columns]
  lines += ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
  bold = {s: top2({row: stats[(row, s)]["mean"] for row in rows if (row, s) in stats}) for s in settings}
  for row in rows:
    loss = row[0]
    cells = [row_label(row)]
    for s in settings:
      st, p = stats.get((row, s)), paper_cell(paper, dataset, *s, loss, metric)
      if st is None:
        mine = [r for r in runs if r.setting == s and (r.loss == loss if by_val else r.row == row)]
        unfinished = sum(r.status != sweep.FINISHED for r in mine)
        cells.append(
          f"— ({unfinished} unfinished)" if unfinished else "— (no validation split)" if mine else ""
        )
      else:
        value = mean_std(st)
        winner = f" [{st['variant']}]" if by_val and (st["variant"] or len(st["variants"]) > 1) else ""
        cells.append((f"**{value}**" if row in bold[s] else value) + f" ({st['n']})" + winner)
      if by_val:
        cells.append("" if st is None else mean_std(st["last"]))
      cells.append(_paper_text(p))
      if st is None or p is None:
        cells.append("")
      else:
        diff = st["mean"] - p["mean"]
        cells.append(f"{diff:+.2f}" + (" †" if p["std"] is not None and abs(diff) > p["std"] else ""))
    lines.append("| " + " | ".join(cells) + " |")
  caption = (
    f"ours: mean ± std (population, ddof=0) over (n) finished seeds, top 2 of each setting in "
    f"bold. paper: Ma et al. 2020, Table{'s' * (len(tables) > 1)} {', '.join(tables) or '—'} "
    f"({'one run per loss' if tables == ['5'] else 'mean ± std of 3 runs'}). Δ = ours − paper; † marks |Δ| "
    "larger than the paper's std."
  )
  if dataset in PAPER_METRIC and metric != PAPER_METRIC[dataset]:
    caption += f" The paper reports {PAPER_METRIC[dataset]} for {dataset} (--metric): no paper column here."
  if metric != "test_acc":
    caption += f" Accuracies are the runs' {metric} (metrics.jsonl), not test_acc (the dataset's test split)."
  if by_val:
    caption += (
      f" Selected by validation accuracy on the held-out split's {val_labels} labels"
      + (" (an oracle: clean labels are not available in practice)" if val_labels == "clean" else "")
      + ": per run, the epoch of highest validation accuracy (ties: the earliest); per cell, among the "
      "hyperparameter variants (workdirs that differ only in their config-override component), the one "
      "with the highest validation accuracy averaged over its seeds, the same variant for every seed, "
      f"in brackets. last: the same runs' last-epoch {what}."
    )
  elif any(variant for _, variant in rows):
    caption += " A row per hyperparameter variant (its config overrides in brackets)."
  lines += ["", caption]
  if by_val and stats:
    lines += ["", "Selection by validation accuracy (%, mean over seeds; the epochs chosen, per seed):", ""]
    for row in rows:
      for s in settings:
        st = stats.get((row, s))
        if st is None:
          continue
        line = f"- {row_label(row)}, {setting_label(s)}: "
        if len(st["variants"]) > 1 or st["variant"]:
          line += f"`{st['variant'] or 'no override'}`, "
        line += f"val {st['val']:.2f}, epochs {', '.join(map(str, st['epochs']))}"
        if len(st["variants"]) > 1:
          line += "; of " + ", ".join(
            f"`{v or 'no override'}` {score:.2f} ({n})" for v, (score, n) in st["variants"].items()
          )
        lines.append(line)
  return "\n".join(lines)


def render_unfinished(runs: Sequence[RunInfo], missing: Sequence[str], no_val: Sequence[RunInfo] = ()) -> str:
  lines = []
  for r in runs:
    if r.status != sweep.FINISHED:
      lines.append(f"- {r.status}: `{r.workdir}` — {r.detail} (log `{r.workdir}.log`)")
  lines += [f"- missing: `{w}` — no workdir" for w in missing]
  lines += [
    f"- no validation split: `{r.workdir}` — finished, without validation metrics (config.val_fraction 0)"
    for r in no_val
  ]
  if not lines:
    return "All expected runs finished; none left out." if runs else "No runs found."
  kinds = "unfinished, missing or without a validation split" if no_val else "unfinished or missing"
  return "\n".join(
    [f"**Left out of the means: {len(lines)} run{'s' * (len(lines) != 1)} {kinds}.**", ""] + lines
  )


# ---------------------------------------------------------------------------------------------------
# The protocol card.
# ---------------------------------------------------------------------------------------------------

MEMORISED, AUROC = "train_corrupted_memorised", "train_loss_auroc"


def _some_stats(values: list[float]) -> dict | None:
  return _stats(values) if values else None


def card_stats(
  runs: Iterable[RunInfo], metric: str = "test_acc", val_key: str = "val_acc_noisy"
) -> dict[tuple[tuple[str, str], tuple[str, float]], dict]:
  """{(row, setting): entry} over the finished runs, accuracies in %, each a `_stats` (population std,
  ddof=0) over the runs that have it, or None where none has it:

  'last': the last epoch's `metric`; 'best': its highest over the epochs (`best_epoch`); 'val': the
  `metric` at the epoch of highest `val_key`; 'lowest': the lowest per-class clean test accuracy at the
  last epoch (`per_class.lowest`); 'memorised': the last epoch's train_corrupted_memorised; 'auroc': its
  train_loss_auroc (not in %). 'lost': `per_class.lost` of each run's last record, in seed order.
  """
  cells = collections.defaultdict(list)
  for r in runs:
    if r.status == sweep.FINISHED and r.metrics:
      cells[(r.row, r.setting)].append(r)
  out = {}
  for cell, group in cells.items():
    group = sorted(group, key=lambda r: (r.seed, str(r.noise_seed)))
    last = [r.metrics[-1] for r in group]
    chosen = [rec for r in group if (rec := best_epoch(r.metrics, val_key)) is not None]
    lowest = [x for rec in last if (x := per_class.lowest(rec)) is not None]
    out[cell] = {
      "last": _stats([100 * rec[metric] for rec in last]),
      "best": _stats([100 * best_epoch(r.metrics, metric)[metric] for r in group]),
      "val": _some_stats([100 * rec[metric] for rec in chosen]),
      "lowest": _some_stats([100 * x for x in lowest]),
      "lost": [per_class.lost(rec) for rec in last],
      "memorised": _some_stats([100 * rec[MEMORISED] for rec in last if rec.get(MEMORISED) is not None]),
      "auroc": _some_stats([rec[AUROC] for rec in last if rec.get(AUROC) is not None]),
    }
  return out


def _card_value(st: dict | None, n: int, empty: str = "—", digits: int = 2) -> str:
  """mean ± std, with (k) when only k of the cell's n runs have the field."""
  if st is None:
    return empty
  return mean_std(st, digits) + ("" if st["n"] == n else f" ({st['n']})")


def render_card(
  runs: Sequence[RunInfo],
  paper: dict,
  metric: str = "test_acc",
  val_labels: str = "noisy",
  seeds: int | None = None,
) -> str:
  """The card of one (dataset, subset, epochs, val_fraction) protocol: a row per loss (and variant) and
  setting that has a run (`card_stats`), then its note."""
  dataset, subset, epochs, val_fraction = runs[0].protocol
  val_key = f"val_acc_{val_labels}"
  entries = card_stats(runs, metric, val_key)
  columns = {
    "val": any(e["val"] for e in entries.values()),
    "memorised": any(e["memorised"] for e in entries.values()),
    "auroc": any(e["auroc"] for e in entries.values()),
  }
  header = ["loss", "setting", "n", "last epoch", "best epoch"]
  header += ["val-selected"] * columns["val"] + ["lowest class", "lost (< 10%)"]
  header += ["memorised"] * columns["memorised"] + ["loss AUROC"] * columns["auroc"] + ["paper"]
  what = metric_title(metric)
  lines = [f"### Card: {dataset} ({protocol_label(dataset, subset, epochs, val_fraction)})", ""]
  align = ["---" if h in ("loss", "setting", "lost (< 10%)") else "---:" for h in header]
  lines += ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
  rows = [(l, v) for l in loss_order(r.loss for r in runs) for v in sorted({r.variant for r in runs})]
  for row in rows:
    for s in setting_order(r.setting for r in runs):
      mine = [r for r in runs if r.row == row and r.setting == s]
      if not mine:
        continue
      e = entries.get((row, s))
      n = e["last"]["n"] if e else 0
      unfinished = sum(r.status != sweep.FINISHED for r in mine)
      count = (f"{n}/{seeds}" if seeds else str(n)) + (f" (+{unfinished} unfinished)" if unfinished else "")
      cells = [row_label(row), setting_label(s), count]
      if e is None:
        cells += ["—"] * (len(header) - 4)
      else:
        cells += [mean_std(e["last"]), mean_std(e["best"])]
        cells += [_card_value(e["val"], n)] * columns["val"]
        cells += [_card_value(e["lowest"], n, "n/a"), per_class.describe_lost(e["lost"])]
        cells += [_card_value(e["memorised"], n)] * columns["memorised"]
        cells += [_card_value(e["auroc"], n, digits=3)] * columns["auroc"]
      cells.append(_paper_text(paper_cell(paper, dataset, *s, row[0], metric)))
      lines.append("| " + " | ".join(cells) + " |")
  note = (
    f"n: finished seeds{f' of the {seeds} expected (--seeds)' if seeds else ''}; unfinished ones are listed "
    f"below, not counted. Accuracies in %, mean ± std (population, ddof=0) over the n seeds, or over (k) "
    f"of them where only k have the field. last epoch: the last epoch's {what} (the paper's protocol). "
    f"best epoch: the highest {what} over the epochs of each run (chosen on the test set, so optimistic; "
    "what protocols that report the best epoch give, such as CIFAR-N's best of 100 epochs)."
  )
  if columns["val"]:
    note += f" val-selected: {what} at each run's epoch of highest {val_key} (ties: the earliest)."
  note += (
    " lowest class: the lowest per-class clean test accuracy at the last epoch (test_acc_per_class; n/a: "
    f"runs written before it). lost: the classes below {100 * per_class.LOST_BELOW:g}% there (numbered "
    "from 0), with how many of the seeds that have per-class accuracies lost each."
  )
  if columns["memorised"]:
    note += (
      " memorised: the last epoch's share of the corrupted training examples (noisy label ≠ clean label) "
      f"predicted as their noisy label (%, {MEMORISED})."
    )
  if columns["auroc"]:
    note += (
      " loss AUROC: how well the per-example training loss tells corrupted from clean examples at the last "
      f"epoch ({AUROC}; 0.5 is chance)."
    )
  note += " paper: Ma et al. 2020, as in the table above."
  return "\n".join(lines + ["", note])


def split_results(runs: Iterable[RunInfo]) -> tuple[list[RunInfo], list[RunInfo]]:
  """(aplx's runs that are results, finished or not; the others: screens stopped on purpose before
  their last epoch, and runs of another code), each in the order given."""
  runs = list(runs)
  result = [not r.screen and r.code == APLX for r in runs]
  return [r for r, ok in zip(runs, result) if ok], [r for r, ok in zip(runs, result) if not ok]


def render_aside(aside: Sequence[RunInfo]) -> str:
  """One line counting the runs that are not results (`split_results`)."""
  screens = [r for r in aside if r.screen]
  others = collections.Counter(r.code for r in aside if not r.screen)
  parts = []
  if screens:
    done = sum(r.status == SCREENED for r in screens)
    parts.append(
      f"{len(screens)} screen run{'s' * (len(screens) != 1)} stopped on purpose before their last epoch "
      f"(config.max_steps or max_epochs; {done} reached it, {len(screens) - done} on their way or "
      "interrupted)"
    )
  parts += [f"{n} full run{'s' * (n != 1)} of another code ({code})" for code, n in sorted(others.items())]
  return (
    f"**Not results, left out of the tables and of the missing runs: {'; '.join(parts)}.** "
    "`python -m experiments.screen --root ...` tables the screens."
  )


def render(
  runs: Sequence[RunInfo],
  missing: Sequence[str],
  paper: dict,
  select: str = "last",
  val_labels: str = "noisy",
  metric: str = "test_acc",
  *,
  card: bool = True,
  seeds: int | None = None,
  aside: Sequence[RunInfo] = (),
) -> str:
  """The markdown: a table per protocol, the protocol card (`card`), a line counting the runs set aside
  (`split_results`: `runs` are the results, `aside` the others), the unfinished and missing runs."""
  if select not in SELECT:
    raise ValueError(f"select={select!r}: use one of {SELECT}.")
  if val_labels not in VAL_LABELS:
    raise ValueError(f"val_labels={val_labels!r}: use one of {VAL_LABELS}.")
  check_metric(runs, metric)  # Over all runs at once (aggregate checks each table's own).
  groups = _groups(runs)
  parts = [render_table(group, paper, select, val_labels, metric) for group in groups.values()]
  if not groups:
    parts.append("No result run with a config.json found." if aside else "No run with a config.json found.")
  if card and groups:
    cards = [render_card(group, paper, metric, val_labels, seeds) for group in groups.values()]
    parts.append("## Protocol card\n\n" + "\n\n".join(cards))
  if aside:
    parts.append(render_aside(aside))
  if runs or missing or not aside:
    no_val = no_validation_split(runs, f"val_acc_{val_labels}") if select == "val" else []
    parts.append(render_unfinished(runs, missing, no_val))
  return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------------
# Figures.
# ---------------------------------------------------------------------------------------------------


def write_plots(
  runs: Sequence[RunInfo],
  out_dir: str,
  memorisation_losses: Sequence[str] = ("ce", "nce+rce"),
  metric: str = "test_acc",
) -> list[str]:
  """Per protocol and noise setting: `metric` per epoch (all losses; `<prefix>_<setting>_<metric>.png`)
  and memorisation."""
  from experiments import plots  # pylint: disable=g-import-not-at-top

  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for (dataset, subset, epochs, val_fraction), group in _groups(runs).items():
    paper = protocol_note(dataset, subset, epochs, val_fraction) is None
    prefix = dataset + ("" if paper else f"_{'n%d_' % subset if subset else ''}e{epochs}")
    protocol = protocol_label(dataset, subset, epochs, val_fraction)
    if val_fraction:
      prefix += f"_val{val_fraction:g}"
    rows = [(l, v) for l in loss_order(r.loss for r in group) for v in sorted({r.variant for r in group})]
    for s in setting_order(r.setting for r in group):
      by_loss = {
        row_label(row).lower(): [r.metrics for r in group if r.row == row and r.setting == s and r.metrics]
        for row in rows
      }
      by_loss = {l: h for l, h in by_loss.items() if h}
      if not by_loss:
        continue
      title = f"{dataset} {setting_label(s)} ({protocol})"
      path = os.path.join(out_dir, f"{prefix}_{setting_slug(s)}_{metric}.png")
      paths.append(plots.test_accuracy(by_loss, path, title, key=metric, ylabel=metric_title(metric)))
      # Memorisation needs the clean training labels (real-noise datasets have none).
      chosen = {
        l: by_loss[l]
        for l in memorisation_losses
        if l in by_loss and all("train_acc_clean" in r for h in by_loss[l] for r in h)
      }
      if chosen:
        paths.append(
          plots.memorisation(
            chosen, os.path.join(out_dir, f"{prefix}_{setting_slug(s)}_memorisation.png"), title
          )
        )
      # Per corrupted training example, and the loss's noise detection: every loss whose records have them.
      corrupted = _having(by_loss, plots.CORRUPTED)
      if corrupted:
        path = os.path.join(out_dir, f"{prefix}_{setting_slug(s)}_corrupted.png")
        paths.append(plots.corrupted_examples(corrupted, path, title))
      auroc = _having(by_loss, (AUROC,))
      if auroc:
        path = os.path.join(out_dir, f"{prefix}_{setting_slug(s)}_loss_auroc.png")
        paths.append(plots.loss_auroc(auroc, path, title))
  return paths


def _having(by_loss: dict[str, list[list[dict]]], keys: Sequence[str]) -> dict[str, list[list[dict]]]:
  """{loss: its histories whose every record has every key (not None)}, without the losses left empty."""
  out = {}
  for loss, histories in by_loss.items():
    kept = [h for h in histories if all(r.get(k) is not None for r in h for k in keys)]
    if kept:
      out[loss] = kept
  return out


def report(
  root: str,
  out: str | None = None,
  plots_dir: str | None = None,
  grid: str = "",
  memorisation_losses: Sequence[str] = ("ce", "nce+rce"),
  paper_csv: str = PAPER_TABLES,
  select: str = "last",
  val_labels: str = "noisy",
  metric: str = "test_acc",
  card: bool = True,
  seeds: int | None = None,
) -> str:
  """Reads `root`, writes the markdown to `out` (and figures to `plots_dir`); returns the markdown.
  `select`, `val_labels`, `metric`, `card`, `seeds`: as the flags --select, --val_labels, --metric,
  --card and --seeds (module docstring). Screens and other codes' runs are left aside (`split_results`)."""
  runs, aside = split_results(collect(root))
  missing = expected_missing(runs, root, grid, seeds)
  paper = load_paper(paper_csv)
  text = render(runs, missing, paper, select, val_labels, metric, card=card, seeds=seeds, aside=aside)
  if plots_dir:
    paths = write_plots(runs, plots_dir, memorisation_losses, metric)
    base = os.path.dirname(os.path.abspath(out)) if out else os.getcwd()
    text += (
      "\n## Figures\n\n"
      + "\n".join(f"![{os.path.basename(p)}]({os.path.relpath(os.path.abspath(p), base)})" for p in paths)
      + "\n"
    )
  write_markdown(text, out)
  return text


def write_markdown(text: str, out: str | None) -> None:
  """Writes `text` to the file `out` (its directory created), if `out` is given."""
  if out:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
      f.write(text)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments {argv[1:]}.")
  if not _ROOT.value:
    raise app.UsageError("--root is required.")
  try:
    text = report(
      _ROOT.value,
      _OUT.value,
      _PLOTS.value,
      _GRID.value,
      _MEMORISATION.value,
      select=_SELECT.value,
      val_labels=_VAL_LABELS.value,
      metric=_METRIC.value,
      card=_CARD.value,
      seeds=_SEEDS.value,
    )
  except ValueError as e:  # A --metric the runs lack: the message says which keys they have.
    raise app.UsageError(str(e)) from e
  print(text, end="")


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
  _SELECT = flags.DEFINE_enum(
    "select",
    "last",
    SELECT,
    "last: last-epoch test accuracy (the paper's protocol), a row per hyperparameter variant. val: per "
    "run the epoch, per cell the variant, of highest validation accuracy (runs with "
    "config.val_fraction > 0); its test accuracy beside the last epoch's.",
  )
  _VAL_LABELS = flags.DEFINE_enum(
    "val_labels",
    "noisy",
    VAL_LABELS,
    "Validation accuracy against the held-out examples' noisy labels (what a practitioner has) or "
    "clean labels (an oracle, for analysis).",
  )
  _METRIC = flags.DEFINE_string(
    "metric",
    "test_acc",
    "The per-epoch key of metrics.jsonl that the table reports: test_acc (the dataset's test split) or "
    "test_acc_<name> for an extra evaluation split, e.g. test_acc_imagenet_val for the paper's Table 5 "
    "(WebVision on the ILSVRC2012 validation images).",
  )
  _CARD = flags.DEFINE_bool(
    "card",
    True,
    "Add the protocol card below the tables: last, best and validation-selected test accuracy, the "
    "lowest class and lost classes, memorisation and loss AUROC (--nocard: the tables only).",
  )
  _SEEDS = flags.DEFINE_integer(
    "seeds",
    None,
    "Seeds expected in every cell: 0..N-1 (with each noise seed found); the others are listed as "
    "missing. Without it (and --grid), the seeds found under --root.",
    lower_bound=1,
  )
  app.run(main)
