"""Per-class clean test accuracy of a run's records: the lowest class, the lost classes, when each was lost.

Every record of metrics.jsonl carries `test_acc_per_class`, one accuracy per class (None for a class with
no test example). A class is lost when its accuracy is below `LOST_BELOW` (10%, chance level on 10
classes). A record without the field (written before it existed) gives None here, never 0: the report
shows "n/a" for it. `experiments.report` (the protocol card) and `experiments.screen` read these.
"""

from collections.abc import Iterable, Sequence

KEY = "test_acc_per_class"
LOST_BELOW = 0.10


def lowest(record: dict) -> float | None:
  """The lowest per-class accuracy of a record (a fraction); None without per-class accuracies."""
  values = [v for v in record.get(KEY) or () if v is not None]
  return min(values) if values else None


def lost(record: dict) -> list[int] | None:
  """The classes below `LOST_BELOW` in a record, in class order; None without per-class accuracies."""
  per_class = record.get(KEY)
  if per_class is None:
    return None
  return [c for c, v in enumerate(per_class) if v is not None and v < LOST_BELOW]


def first_lost(metrics: Sequence[dict], c: int) -> int | None:
  """The first epoch whose record has class `c` below `LOST_BELOW`; None if no record does."""
  for record in metrics:
    if c in (lost(record) or ()):
      return record["epoch"]
  return None


def lost_counts(lost_per_run: Iterable[list[int] | None]) -> tuple[dict[int, int], int]:
  """({class: how many runs lost it}, how many runs have per-class accuracies), from `lost` of each
  run's record."""
  counts, known = {}, 0
  for classes in lost_per_run:
    if classes is None:
      continue
    known += 1
    for c in classes:
      counts[c] = counts.get(c, 0) + 1
  return dict(sorted(counts.items())), known


def describe_lost(lost_per_run: Sequence[list[int] | None], unit: str = "seeds") -> str:
  """'lost: 5 (2/3 seeds), 7 (1/3 seeds)'; '' when no run lost a class; 'n/a' when no run has
  per-class accuracies."""
  counts, known = lost_counts(lost_per_run)
  if not known:
    return "n/a"
  if not counts:
    return ""
  return "lost: " + ", ".join(f"{c} ({k}/{known} {unit})" for c, k in counts.items())
