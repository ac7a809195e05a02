"""aplx.data.real_noise: WebVision / Clothing1M built from tiny fake trees in the official layouts.

The trees come from tests/real_noise_trees.py (imported as a plain module: tests/ is on sys.path under
pytest's default import mode). Each prepared dataset is read back and compared with what the generator
wrote: keys, labels, the image bytes and the image's colour (unique per image).
"""

import io
from pathlib import Path
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import real_noise_trees as trees

tfds = pytest.importorskip("tensorflow_datasets", reason="the 'data' extra is not installed")

from aplx.data import prepare, real_noise  # noqa: E402

MINI = 50


def _records(name, data_dir, split):
  """All records of a split as {key: record}, the image as its encoded bytes."""
  src = real_noise.builder(name, data_dir).as_data_source(
    split, decoders={"image": tfds.decode.SkipDecoding()}
  )
  out = {}
  for i in range(len(src)):
    r = src[i]
    out[r["key"].decode()] = r
  assert len(out) == len(src), "keys are not unique"
  return out


def _check_images(records, root: Path, expected_colour: dict):
  """Each record's image is the file's bytes, and shows the colour the generator gave that file."""
  for key, r in records.items():
    assert r["image"] == (root / key).read_bytes(), key
    img = np.asarray(Image.open(io.BytesIO(r["image"])).convert("RGB"), dtype=np.float64)
    np.testing.assert_allclose(img.mean(axis=(0, 1)), expected_colour[key], atol=6, err_msg=key)


def _no_data_written(data_dir: Path) -> bool:
  return not [p for p in data_dir.rglob("*") if "array_record" in p.name or p.name == "dataset_info.json"]


# ---------------------------------------------------------------------------------------------------
# WebVision
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def webvision(tmp_path_factory):
  """A 52-class tree, prepared as webvision (mini, with imagenet_val) and webvision_full in one data dir."""
  tree = trees.make_webvision_tree(tmp_path_factory.mktemp("webvision_raw"))
  data_dir = tmp_path_factory.mktemp("tfds")
  mini_path = prepare.prepare(
    "webvision",
    data_dir=str(data_dir),
    raw_dir=str(tree["root"]),
    imagenet_val_dir=str(tree["imagenet_val_dir"]),
  )
  full_path = prepare.prepare("webvision_full", data_dir=str(data_dir), raw_dir=str(tree["root"]))
  assert Path(mini_path) == data_dir / "webvision" / "mini" / "1.0.0"
  assert Path(full_path) == data_dir / "webvision" / "full" / "1.0.0"
  return tree, data_dir


def test_webvision_mini_keeps_classes_below_50(webvision):
  tree, data_dir = webvision
  b = real_noise.builder("webvision", data_dir)
  assert b.is_prepared() and set(b.info.splits) == {"train", "val", "imagenet_val"}
  assert b.info.features["label"].names == tree["wnids"][:MINI]
  for split, root in (("train", tree["root"]), ("val", tree["root"] / "val_images_256")):
    want = {key: (label, rgb) for key, label, rgb in tree[split] if label < MINI}
    assert len(want) < len(tree[split])  # The tree has classes 50 and 51: the filter is exercised.
    records = _records("webvision", data_dir, split)
    assert sorted(records) == sorted(want)
    assert {k: int(r["label"]) for k, r in records.items()} == {k: y for k, (y, _) in want.items()}
    _check_images(records, root, {k: rgb for k, (_, rgb) in want.items()})


def test_webvision_imagenet_val_classes_follow_synsets(webvision):
  tree, data_dir = webvision
  records = _records("webvision", data_dir, "imagenet_val")
  assert tree["wnids"][:MINI] != sorted(tree["wnids"][:MINI])  # Sorted folder names would be wrong.
  want = {key: (label, rgb) for key, label, rgb in tree["imagenet_val"] if label < MINI}
  assert sorted(records) == sorted(want)
  for key, r in records.items():
    assert int(r["label"]) == tree["wnids"].index(key.split("/")[0]) == want[key][0]
  _check_images(records, tree["imagenet_val_dir"], {k: rgb for k, (_, rgb) in want.items()})


def test_webvision_full_keeps_all_classes(webvision):
  tree, data_dir = webvision
  b = real_noise.builder("webvision_full", data_dir)
  assert set(b.info.splits) == {"train", "val"}  # Built without imagenet_val_dir.
  assert b.info.features["label"].names == tree["wnids"]
  for split in ("train", "val"):
    records = _records("webvision_full", data_dir, split)
    assert {k: int(r["label"]) for k, r in records.items()} == {k: y for k, y, _ in tree[split]}
    assert max(int(r["label"]) for r in records.values()) == 51


def test_webvision_mini_does_not_need_images_of_other_classes(tmp_path):
  tree = trees.make_webvision_tree(tmp_path / "raw", imagenet_val=False)
  for key, label, _ in tree["train"]:
    if label >= MINI:
      (tree["root"] / key).unlink()
  prepare.prepare("webvision", data_dir=str(tmp_path / "tfds"), raw_dir=str(tree["root"]))
  assert len(_records("webvision", tmp_path / "tfds", "train")) == MINI


def _set_line(path: Path, line_number: int, text: str) -> None:
  lines = path.read_text().splitlines()
  lines[line_number - 1] = text
  path.write_text("\n".join(lines) + "\n")


def _append_line(path: Path, text: str) -> None:
  path.write_text(path.read_text() + text + "\n")


def _unlink_first(tree, split, root):
  key = next(k for k, y, *_ in tree[split] if y < MINI)
  (root / key).unlink()


_INFO = Path("info")
WEBVISION_ERRORS = {
  "missing list": (
    lambda t: (t["root"] / _INFO / "val_filelist.txt").unlink(),
    FileNotFoundError,
    r"info/val_filelist.txt not found: expected WebVision's val list",
  ),
  "malformed line": (
    lambda t: _set_line(t["root"] / _INFO / "train_filelist_google.txt", 3, "google/q0001/000000.jpg"),
    ValueError,
    r"train_filelist_google.txt, line 3: 'google/q0001/000000.jpg' is not '<image path> <integer label>'",
  ),
  "label not an integer": (
    lambda t: _set_line(t["root"] / _INFO / "val_filelist.txt", 2, "val000002.jpg two"),
    ValueError,
    r"val_filelist.txt, line 2: .* is not '<image path> <integer label>'",
  ),
  "label out of range": (
    lambda t: _set_line(t["root"] / _INFO / "val_filelist.txt", 2, "val000002.jpg 1000"),
    ValueError,
    r"val_filelist.txt, line 2: label 1000 is outside \[0, 1000\)",
  ),
  "missing image": (
    lambda t: _unlink_first(t, "train", t["root"]),
    FileNotFoundError,
    r"1 of the 50 images listed in .*train_filelist_google.txt are missing under",
  ),
  "missing val image": (
    lambda t: _unlink_first(t, "val", t["root"] / "val_images_256"),
    FileNotFoundError,
    r"1 of the 50 images listed in .*val_filelist.txt are missing under .*val_images_256",
  ),
  "short synsets.txt": (
    lambda t: (t["root"] / _INFO / "synsets.txt").write_text("n01440764 tench\n"),
    ValueError,
    r"synsets.txt: expected 1000 distinct wnids .*got 1 lines, 1 distinct",
  ),
  "imagenet_val without synsets.txt": (
    lambda t: (t["root"] / _INFO / "synsets.txt").unlink(),
    FileNotFoundError,
    r"info/synsets.txt not found: imagenet_val needs WebVision's class list",
  ),
  "imagenet_val unknown wnid folder": (
    lambda t: (t["imagenet_val_dir"] / "n99999999x").mkdir(),
    ValueError,
    r"1 folders that are not wnids of WebVision's synsets.txt, e.g. \['n99999999x'\]",
  ),
  "imagenet_val missing class folder": (
    lambda t: shutil.rmtree(t["imagenet_val_dir"] / t["wnids"][7]),
    FileNotFoundError,
    r"lacks the folders of 1 of the first 50 classes",
  ),
}


@pytest.mark.parametrize("case", sorted(WEBVISION_ERRORS))
def test_webvision_errors_before_writing(tmp_path, case):
  mutate, error, message = WEBVISION_ERRORS[case]
  tree = trees.make_webvision_tree(tmp_path / "raw")
  mutate(tree)
  with pytest.raises(error, match=message):
    prepare.prepare(
      "webvision",
      data_dir=str(tmp_path / "tfds"),
      raw_dir=str(tree["root"]),
      imagenet_val_dir=str(tree["imagenet_val_dir"]),
    )
  assert _no_data_written(tmp_path / "tfds")


@pytest.mark.parametrize(
  "name,where",
  [("webvision", "data.vision.ee.ethz.ch/cvl/webvision"), ("clothing1m", "github.com/Cysu/noisy_label")],
)
def test_no_raw_dir_says_where_to_download(tmp_path, name, where):
  with pytest.raises(ValueError, match="no download URL") as e:
    prepare.prepare(name, data_dir=str(tmp_path))
  assert where in str(e.value)
  assert f"python -m aplx.data.prepare {name} --raw_dir " in str(e.value)
  assert _no_data_written(tmp_path)


# ---------------------------------------------------------------------------------------------------
# Clothing1M
# ---------------------------------------------------------------------------------------------------


def _check_clothing1m(tree, data_dir):
  b = real_noise.builder("clothing1m", data_dir)
  assert b.info.features["label"].names == tree["names"]
  train = _records("clothing1m", data_dir, "train")
  want = {key: (noisy, clean) for key, noisy, clean, _ in tree["train"]}
  assert {k: (int(r["label"]), int(r["clean_label"])) for k, r in train.items()} == want
  cleans = [c for _, c in want.values()]
  assert -1 in cleans and max(cleans) >= 0  # Training images with and without a clean label.
  assert any(n != c >= 0 for n, c in want.values())  # ... and a clean label that differs from the noisy one.
  _check_images(train, tree["root"], {key: rgb for key, *_, rgb in tree["train"]})
  for split in ("val", "test"):
    records = _records("clothing1m", data_dir, split)
    assert {k: (int(r["label"]), int(r["clean_label"])) for k, r in records.items()} == {
      key: (y, y) for key, y, _ in tree[split]
    }
    _check_images(records, tree["root"], {key: rgb for key, _, rgb in tree[split]})


def test_clothing1m_annotations_folder(tmp_path):
  tree = trees.make_clothing1m_tree(tmp_path / "raw")
  path = prepare.prepare("clothing1m", data_dir=str(tmp_path / "tfds"), raw_dir=str(tree["root"]))
  assert Path(path) == tmp_path / "tfds" / "clothing1m" / "1.0.0"
  _check_clothing1m(tree, tmp_path / "tfds")


def test_clothing1m_flat_layout_with_the_cli(tmp_path):
  tree = trees.make_clothing1m_tree(tmp_path / "raw", flat=True, rng_seed=1)
  assert not (tree["root"] / "annotations").exists()
  cmd = [sys.executable, "-m", "aplx.data.prepare", "clothing1m", "--raw_dir", str(tree["root"])]
  done = subprocess.run(
    cmd + ["--data_dir", str(tmp_path / "tfds")], capture_output=True, text=True, timeout=120
  )
  assert done.returncode == 0, done.stderr
  assert "prepared clothing1m at" in done.stdout
  _check_clothing1m(tree, tmp_path / "tfds")


def _annotation(tree, name):
  return tree["root"] / "annotations" / name


CLOTHING1M_ERRORS = {
  "no annotation files": (
    lambda t: _annotation(t, "noisy_label_kv.txt").unlink(),
    FileNotFoundError,
    r"noisy_label_kv.txt not found in .*annotations or ",
  ),
  "missing key list": (
    lambda t: _annotation(t, "clean_test_key_list.txt").unlink(),
    FileNotFoundError,
    r"annotations/clean_test_key_list.txt not found: expected Clothing1M's test image list",
  ),
  "malformed label line": (
    lambda t: _set_line(_annotation(t, "noisy_label_kv.txt"), 2, "images/0/00/1,2.jpg"),
    ValueError,
    r"noisy_label_kv.txt, line 2: 'images/0/00/1,2.jpg' is not '<image path> <integer label>'",
  ),
  "malformed key line": (
    lambda t: _set_line(_annotation(t, "clean_val_key_list.txt"), 4, "images/0/00/1,2.jpg 3"),
    ValueError,
    r"clean_val_key_list.txt, line 4: .* is not one image path",
  ),
  "label out of range": (
    lambda t: _set_line(_annotation(t, "clean_label_kv.txt"), 1, "images/0/00/1,2.jpg 14"),
    ValueError,
    r"clean_label_kv.txt, line 1: label 14 is outside \[0, 14\)",
  ),
  "key without label": (
    lambda t: _append_line(_annotation(t, "clean_val_key_list.txt"), "images/9/99/0,0.jpg"),
    ValueError,
    r"1 of the 15 images in .*clean_val_key_list.txt have no label in .*clean_label_kv.txt; "
    r"the first is line 15: 'images/9/99/0,0.jpg'",
  ),
  "missing image": (
    lambda t: (t["root"] / t["test"][3][0]).unlink(),
    FileNotFoundError,
    r"1 of the 14 images listed in .*clean_test_key_list.txt are missing under",
  ),
  "wrong class names": (
    lambda t: _set_line(_annotation(t, "category_names_eng.txt"), 14, ""),
    ValueError,
    r"category_names_eng.txt: expected 14 class names \(one a line\), got 13",
  ),
}


@pytest.mark.parametrize("case", sorted(CLOTHING1M_ERRORS))
def test_clothing1m_errors_before_writing(tmp_path, case):
  mutate, error, message = CLOTHING1M_ERRORS[case]
  tree = trees.make_clothing1m_tree(tmp_path / "raw")
  mutate(tree)
  with pytest.raises(error, match=message):
    prepare.prepare("clothing1m", data_dir=str(tmp_path / "tfds"), raw_dir=str(tree["root"]))
  assert _no_data_written(tmp_path / "tfds")


# ---------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------


def test_registry():
  for name in ("webvision", "webvision_full", "clothing1m"):
    assert name in prepare.BUILDERS and name in prepare.RAW_HINTS
    assert not real_noise.builder(name, "/nonexistent").is_prepared()
  assert real_noise.builder("webvision_full", "/nonexistent").builder_config.num_classes == 1000
  with pytest.raises(ValueError, match="unknown dataset 'webvision_mini'"):
    real_noise.builder("webvision_mini", "/nonexistent")
