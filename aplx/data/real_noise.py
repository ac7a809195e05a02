"""WebVision 1.0 and Clothing1M as TFDS datasets (array_record), built without TensorFlow from the
official releases, which have no download URL: you download them by hand, then

  python -m aplx.data.prepare webvision --raw_dir /path/to/webvision --data_dir DATA_DIR \\
      [--imagenet_val_dir /path/to/ILSVRC2012/val]
  python -m aplx.data.prepare clothing1m --raw_dir /path/to/clothing1m --data_dir DATA_DIR

Datasets (`BUILDERS` keys; TFDS name/config, version 1.0.0, on disk in <data_dir>/<name>/<config>/1.0.0):

  webvision       TFDS "webvision/mini": the Google images of classes 0..49, the "mini" setting of the
                  APL paper (Ma et al. 2020, Table 5). Splits `train`, `val` (WebVision's validation
                  images of those classes), and `imagenet_val` when built with `imagenet_val_dir`.
  webvision_full  TFDS "webvision/full": the same for all 1000 classes.
  clothing1m      TFDS "clothing1m": 14 classes. `train` (the noisy training list, noisy labels), `val`
                  and `test` (the clean lists, clean labels).

Raw layouts (what `--raw_dir` points to):

  WebVision 1.0, "resized images" release (https://data.vision.ee.ethz.ch/cvl/webvision/download.html):
    info/train_filelist_google.txt   lines "google/q0001/000000.jpg 0" (path relative to raw_dir, label)
    info/val_filelist.txt            lines "val000001.jpg 0" (images in val_images_256/)
    info/synsets.txt                 lines "n01440764 tench, Tinca tinca": line i is class i (the
                                     ILSVRC2012 synsets in their order); optional except for imagenet_val
    google/q..../*.jpg, val_images_256/*.jpg
  ILSVRC2012 validation images (`imagenet_val_dir`): the usual folder layout <dir>/<wnid>/*.JPEG; the class
    of a folder is the line of its wnid in info/synsets.txt.
  Clothing1M (by request from the authors, https://github.com/Cysu/noisy_label):
    noisy_label_kv.txt, clean_label_kv.txt   lines "images/0/81/1357286767,2143640081.jpg 3"
    noisy_train_key_list.txt, clean_val_key_list.txt, clean_test_key_list.txt   one image path a line
    category_names_eng.txt (optional: 14 class names)
    images/...                               (the paths in the lists are relative to raw_dir)
    The annotation files are read from raw_dir/annotations/ if it holds noisy_label_kv.txt (the layout
    of many copies), else from raw_dir itself (the authors' README layout). Images are always at
    raw_dir/<path in the list>.

Features: `image` (the file's JPEG bytes, unchanged), `label` (ClassLabel, names from synsets.txt's wnids or
category_names_eng.txt when present), `key` (the image path as written in the list file; imagenet_val:
"<wnid>/<file>"), and for clothing1m `clean_label` (int64: the image's label in clean_label_kv.txt, -1
when it has none; equal to `label` in val and test). Example keys are the line indices in the list files
(imagenet_val: the index in the sorted "<wnid>/<file>" list), so the order on disk is reproducible.

Every list is parsed and every listed image checked to exist before anything is written. Reading:
`builder(name, data_dir).as_data_source(split)` (these builders are not in TFDS's registry).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
from pathlib import Path

import numpy as np

from aplx import _deps
from aplx.data import _readers

with _deps.extra("data", __name__):
  import tensorflow_datasets as tfds

__all__ = ["BUILDERS", "RAW_HINTS", "Clothing1M", "WebVision", "builder"]

WEBVISION_DOWNLOAD = "https://data.vision.ee.ethz.ch/cvl/webvision/download.html"
CLOTHING1M_DOWNLOAD = "https://github.com/Cysu/noisy_label"
WEBVISION_CLASSES = 1000
CLOTHING1M_CLASSES = 14

# ---------------------------------------------------------------------------------------------------
# List files (all checks raise before anything is written)
# ---------------------------------------------------------------------------------------------------


def _lines(path: Path, what: str) -> list[tuple[int, str]]:
  """(line number from 1, stripped text) of the non-blank lines of `path`, which must exist."""
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found: expected {what}.")
  with open(path, encoding="utf-8") as f:
    return [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip()]


def _labelled_list(path: Path, what: str, num_classes: int) -> list[tuple[int, str, int]]:
  """Lines "<image path> <label>" -> (line index from 0, path, label), labels checked in [0, K)."""
  out = []
  for n, line in _lines(path, what):
    parts = line.rsplit(maxsplit=1)
    try:
      label = int(parts[1]) if len(parts) == 2 else None
    except ValueError:
      label = None
    if label is None:
      raise ValueError(f"{path}, line {n}: {line!r} is not '<image path> <integer label>' ({what}).")
    if not 0 <= label < num_classes:
      raise ValueError(f"{path}, line {n}: label {label} is outside [0, {num_classes}) ({what}).")
    out.append((n - 1, parts[0], label))
  return out


def _key_list(path: Path, what: str) -> list[tuple[int, str]]:
  """Lines "<image path>" -> (line index from 0, path)."""
  out = []
  for n, line in _lines(path, what):
    if len(line.split()) != 1:
      raise ValueError(f"{path}, line {n}: {line!r} is not one image path ({what}).")
    out.append((n - 1, line))
  return out


def _label_map(path: Path, what: str, num_classes: int) -> dict[str, int]:
  """A "<image path> <label>" file as a dict (a repeated path keeps its last label, as the public loaders)."""
  return {key: label for _, key, label in _labelled_list(path, what, num_classes)}


def _lookup(
  keys: list[tuple[int, str]], labels: dict[str, int], key_file: Path, label_file: Path
) -> list[int]:
  """The label of every key; an error names the keys (file, line) that `label_file` lacks."""
  missing = [(i + 1, key) for i, key in keys if key not in labels]
  if missing:
    n, key = missing[0]
    raise ValueError(
      f"{len(missing)} of the {len(keys)} images in {key_file} have no label in {label_file}; the first is "
      f"line {n}: {key!r}. Both files must come from the same Clothing1M release."
    )
  return [labels[key] for _, key in keys]


def _first_tokens(path: Path, what: str) -> list[str]:
  """The first word of every line (synsets.txt: the wnids, in class order)."""
  return [line.split()[0] for _, line in _lines(path, what)]


def _missing_files(paths: list[str]) -> list[str]:
  return [p for p in paths if not os.path.isfile(p)]


def _check_images(root: Path, rel_paths: list[str], list_file: Path, hint: str) -> None:
  """Raises FileNotFoundError if any listed image is not a file under `root` (stat calls in threads)."""
  paths = [os.path.join(root, p) for p in rel_paths]
  chunks = [paths[i : i + 4096] for i in range(0, len(paths), 4096)]
  with concurrent.futures.ThreadPoolExecutor(16) as pool:
    missing = [p for part in pool.map(_missing_files, chunks) for p in part]
  if missing:
    raise FileNotFoundError(
      f"{len(missing)} of the {len(paths)} images listed in {list_file} are missing under {root}, e.g. "
      f"{missing[:3]}. {hint}"
    )


def _manual_download_error(name: str, how: str, data_dir) -> ValueError:
  return ValueError(
    f"{name} has no download URL: {how} Then build it with\n"
    f"  python -m aplx.data.prepare {name} --raw_dir /path/to/{name.split('_')[0]} --data_dir {data_dir}"
  )


# ---------------------------------------------------------------------------------------------------
# WebVision 1.0
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class WebVisionConfig(tfds.core.BuilderConfig):
  """A WebVision setting: the Google images of classes 0..num_classes-1."""

  num_classes: int = 1000


class WebVision(_readers.LocalSourceMixin, tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """TFDS `webvision` (configs "mini", "full") from the WebVision 1.0 resized-256 release.

  `raw_dir`: the release root (info/, google/, val_images_256/). `imagenet_val_dir`: ILSVRC2012
  validation images as <dir>/<wnid>/*.JPEG, adds the split `imagenet_val` (to add it to a dataset that
  was built without it, delete <data_dir>/webvision/<config>/1.0.0 and build again).
  """

  name = "webvision"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Google images of WebVision 1.0 (resized), val, optional ILSVRC2012 val."}
  BUILDER_CONFIGS = [
    WebVisionConfig(
      name="mini", num_classes=50, description="WebVision 'mini': Google images of classes 0..49."
    ),
    WebVisionConfig(name="full", num_classes=1000, description="Google images of all 1000 classes."),
  ]

  def __init__(self, *, imagenet_val_dir: str | os.PathLike | None = None, **kwargs):
    self._imagenet_val_dir = None if imagenet_val_dir is None else Path(imagenet_val_dir).expanduser()
    super().__init__(**kwargs)

  def _info(self):
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
          "label": tfds.features.ClassLabel(num_classes=self.builder_config.num_classes),
          "key": tfds.features.Text(),
        }
      ),
      supervised_keys=("image", "label"),
      homepage="https://data.vision.ee.ethz.ch/cvl/webvision/dataset2017.html",
      citation="""@article{li2017webvision,
  title={WebVision Database: Visual Learning and Understanding from Web Data},
  author={Li, Wen and Wang, Limin and Li, Wei and Agustsson, Eirikur and Van Gool, Luc},
  journal={arXiv preprint arXiv:1708.02862}, year={2017}}""",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    k = self.builder_config.num_classes
    if self._raw_dir is None:
      raise _manual_download_error(
        "webvision" if self.builder_config.name == "mini" else "webvision_full",
        f'download WebVision 1.0\'s "resized images" release (the Google images, the validation images '
        f"and the info/ meta files) from {WEBVISION_DOWNLOAD} and extract it into one folder (info/, "
        "google/, val_images_256/).",
        self.data_dir_root,
      )
    raw = self._raw_dir
    hint = f"Extract the whole WebVision 1.0 resized release into {raw}."
    synsets_file = raw / "info" / "synsets.txt"
    wnids = _first_tokens(synsets_file, "WebVision's class list") if synsets_file.is_file() else None
    if wnids is not None:
      if len(wnids) < k or len(set(wnids)) != len(wnids):
        raise ValueError(
          f"{synsets_file}: expected {WEBVISION_CLASSES} distinct wnids (lines 'n01440764 tench, ...'), got "
          f"{len(wnids)} lines, {len(set(wnids))} distinct."
        )
      self.info.features["label"].names = wnids[:k]

    lists = {
      "train": (raw, raw / "info" / "train_filelist_google.txt"),
      "val": (raw / "val_images_256", raw / "info" / "val_filelist.txt"),
    }
    splits = {}
    for split, (root, list_file) in lists.items():
      examples = [
        e for e in _labelled_list(list_file, f"WebVision's {split} list", WEBVISION_CLASSES) if e[2] < k
      ]
      _check_images(root, [rel for _, rel, _ in examples], list_file, hint)
      splits[split] = (root, examples)
    if self._imagenet_val_dir is not None:
      examples = _imagenet_val(self._imagenet_val_dir, synsets_file, wnids, k)
      splits["imagenet_val"] = (self._imagenet_val_dir, examples)
    return {split: self._generate_examples(root, examples) for split, (root, examples) in splits.items()}

  def _generate_examples(self, root: Path, examples):  # pylint: disable=arguments-differ
    for index, rel, label in examples:
      yield index, {"image": (root / rel).read_bytes(), "label": label, "key": rel}


def _imagenet_val(
  val_dir: Path, synsets_file: Path, wnids: list[str] | None, num_classes: int
) -> list[tuple[int, str, int]]:
  """(index, "<wnid>/<file>", class) of the ILSVRC2012 val images of classes < num_classes.

  The class of a folder is the line of its wnid in WebVision's info/synsets.txt (which lists the ILSVRC2012
  synsets in order); every folder must be a known wnid, and every class < num_classes must have one.
  """
  if wnids is None:
    raise FileNotFoundError(
      f"{synsets_file} not found: imagenet_val needs WebVision's class list (the wnid of each class, one a "
      "line) to map the ILSVRC2012 <wnid>/ folders to classes."
    )
  if not val_dir.is_dir():
    raise FileNotFoundError(
      f"--imagenet_val_dir {val_dir} is not a directory (expected <dir>/<wnid>/*.JPEG)."
    )
  folders = sorted(p.name for p in val_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
  class_of = {wnid: i for i, wnid in enumerate(wnids)}
  unknown = [f for f in folders if f not in class_of]
  if unknown:
    raise ValueError(
      f"{val_dir} has {len(unknown)} folders that are not wnids of WebVision's synsets.txt, e.g. "
      f"{unknown[:3]}; expected the ILSVRC2012 validation images sorted into <dir>/<wnid>/*.JPEG folders."
    )
  absent = [w for w in wnids[:num_classes] if w not in folders]
  if absent:
    raise FileNotFoundError(
      f"{val_dir} lacks the folders of {len(absent)} of the first {num_classes} classes, e.g. {absent[:3]} "
      "(expected one <wnid>/ folder per ILSVRC2012 class)."
    )
  rels = sorted(
    f"{wnid}/{f.name}"
    for wnid in folders
    if class_of[wnid] < num_classes
    for f in (val_dir / wnid).iterdir()
    if f.is_file() and f.suffix.lower() in (".jpeg", ".jpg")
  )
  if not rels:
    raise FileNotFoundError(f"{val_dir}/<wnid>/ folders hold no .JPEG images.")
  return [(i, rel, class_of[rel.split("/")[0]]) for i, rel in enumerate(rels)]


# ---------------------------------------------------------------------------------------------------
# Clothing1M
# ---------------------------------------------------------------------------------------------------


def _clothing1m_annotations(raw: Path) -> Path:
  """raw/annotations/ if it holds noisy_label_kv.txt, else raw/ (the authors' README layout)."""
  for folder in (raw / "annotations", raw):
    if (folder / "noisy_label_kv.txt").is_file():
      return folder
  raise FileNotFoundError(
    f"noisy_label_kv.txt not found in {raw / 'annotations'} or {raw}: expected the Clothing1M annotation "
    "files (noisy_label_kv.txt, clean_label_kv.txt, *_key_list.txt) in one of them."
  )


class Clothing1M(_readers.LocalSourceMixin, tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """TFDS `clothing1m`: train (noisy labels, with `clean_label` where known), val and test (clean)."""

  name = "clothing1m"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Clothing1M: noisy train, clean val and test."}

  def _info(self):
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
          "label": tfds.features.ClassLabel(num_classes=CLOTHING1M_CLASSES),
          "clean_label": tfds.features.Tensor(shape=(), dtype=np.int64),
          "key": tfds.features.Text(),
        }
      ),
      supervised_keys=("image", "label"),
      homepage=CLOTHING1M_DOWNLOAD,
      citation="""@inproceedings{xiao2015learning,
  title={Learning from Massive Noisy Labeled Data for Image Classification},
  author={Xiao, Tong and Xia, Tian and Yang, Yi and Huang, Chang and Wang, Xiaogang},
  booktitle={CVPR}, year={2015}}""",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    if self._raw_dir is None:
      raise _manual_download_error(
        "clothing1m",
        f"request Clothing1M from its authors (see {CLOTHING1M_DOWNLOAD}), extract the images and the "
        "annotation files into one folder (images/, and the *.txt files there or in annotations/).",
        self.data_dir_root,
      )
    raw = self._raw_dir
    ann = _clothing1m_annotations(raw)
    names_file = ann / "category_names_eng.txt"
    if names_file.is_file():
      names = [line for _, line in _lines(names_file, "the 14 class names")]
      if len(names) != CLOTHING1M_CLASSES:
        raise ValueError(
          f"{names_file}: expected {CLOTHING1M_CLASSES} class names (one a line), got {len(names)}."
        )
      self.info.features["label"].names = names
    k = CLOTHING1M_CLASSES
    noisy_file, clean_file = ann / "noisy_label_kv.txt", ann / "clean_label_kv.txt"
    noisy = _label_map(noisy_file, "Clothing1M's noisy labels", k)
    clean = _label_map(clean_file, "Clothing1M's clean labels", k)
    splits = {}
    for split, list_name in (
      ("train", "noisy_train_key_list.txt"),
      ("val", "clean_val_key_list.txt"),
      ("test", "clean_test_key_list.txt"),
    ):
      key_file = ann / list_name
      keys = _key_list(key_file, f"Clothing1M's {split} image list")
      if split == "train":
        labels = _lookup(keys, noisy, key_file, noisy_file)
        clean_labels = [clean.get(key, -1) for _, key in keys]
      else:
        labels = clean_labels = _lookup(keys, clean, key_file, clean_file)
      _check_images(raw, [key for _, key in keys], key_file, f"Extract all Clothing1M images into {raw}.")
      splits[split] = [(i, key, y, c) for (i, key), y, c in zip(keys, labels, clean_labels)]
    return {split: self._generate_examples(raw, examples) for split, examples in splits.items()}

  def _generate_examples(self, root: Path, examples):  # pylint: disable=arguments-differ
    for index, key, label, clean_label in examples:
      yield (
        index,
        {"image": (root / key).read_bytes(), "label": label, "clean_label": clean_label, "key": key},
      )


# ---------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------

BUILDERS = {
  "webvision": functools.partial(WebVision, config="mini"),
  "webvision_full": functools.partial(WebVision, config="full"),
  "clothing1m": Clothing1M,
}
# What --raw_dir is (a placeholder path: the prepare commands in error messages use it; docs/data.md
# has the layouts).
RAW_HINTS = {
  "webvision": "/path/to/webvision",  # the WebVision 1.0 resized-256 root: info/, google/, val_images_256/
  "webvision_full": "/path/to/webvision",
  "clothing1m": "/path/to/clothing1m",  # images/ and the *_kv.txt / *_key_list.txt files (or annotations/)
}


def builder(name: str, data_dir: str | os.PathLike | None = None) -> tfds.core.DatasetBuilder:
  """The TFDS builder of `name` (a `BUILDERS` key) in `data_dir`, for reading a prepared dataset.

  (`tfds.builder` cannot construct these builders: they are not in TFDS's registry.) E.g.
  `builder("webvision", data_dir).as_data_source("val")`; `.is_prepared()` says whether it is built.
  """
  if name not in BUILDERS:
    raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(BUILDERS)}.")
  return BUILDERS[name](data_dir=str(data_dir or _readers.default_data_dir()))
