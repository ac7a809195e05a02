"""The benchmarks that others run on machines we do not have: they must work before they get there."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _table(text: str, title: str) -> tuple[list[str], list[list[str]]]:
  """(header cells, rows of cells) of the first markdown table after the line starting with `title`."""
  block = []
  for x in text[text.index(title) :].splitlines()[1:]:
    if x.startswith("#"):  # The next section.
      break
    block.append(x)
  cells = [[c.strip() for c in x.strip().strip("|").split("|")] for x in block if x.startswith("|")]
  return cells[0], cells[2:]


@pytest.mark.slow  # A subprocess that compiles the MNIST CNN's step four ways (~30-90 s on 2 cores).
def test_accelerator_smoke_report(tmp_path):
  out = tmp_path / "report.md"
  proc = subprocess.run(
    [sys.executable, "-m", "benchmarks.accelerator", "--smoke", "--out", str(out)],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  text = proc.stdout
  assert out.read_text() == text
  assert text.startswith("# aplx accelerator check (--smoke")

  header, rows = _table(text, "# aplx accelerator check")
  assert header[:3] == ["platform", "device kind", "devices"] and len(rows) == 1
  assert rows[0][0] == "cpu" and int(rows[0][2]) >= 1

  header, rows = _table(text, "## Tests on this backend")
  assert header[:5] == ["area", "selection", "passed", "failed", "skipped"]
  assert [(r[2], r[3], r[5]) for r in rows] == [("1", "0", "0")], rows  # 1 passed, 0 failed, exit 0.

  header, rows = _table(text, "## Train step")
  assert header == [
    "model", "image", "batch", "dtype", "kernels", "feed", "img/s (median)", "ms/step", "timed steps",
    "peak device memory", "loss finite",
  ]  # fmt: skip
  expected = [
    (k, feed) for k in ("fast", "reference") for feed in ("placed", "host", "device_data")
  ]  # CPU: aplx's CPU kernels and the stock layers, each fed three ways.
  assert [(r[4], r[5]) for r in rows] == expected, rows
  for r in rows:
    assert r[:4] == ["mnist_cnn", "28x28x1", "8", "float32"], r
    assert float(r[6].replace(",", "")) > 0 and float(r[7]) > 0 and r[8] == "3", r
    assert r[9] == "n/a" and r[10] == "True", r  # The CPU backend keeps no memory stats.

  header, rows = _table(text, "## Losses")
  assert header == ["loss", "ms", "optax CE ms", "loss / CE"]
  assert [r[0] for r in rows] == ["nce+rce", "nce+mae"]
  for r in rows:
    assert float(r[1]) > 0 and float(r[2]) > 0 and r[3].endswith("x"), r
