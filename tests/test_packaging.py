"""What `pip install aplx` installs and imports: jax and numpy for the losses, extras for the rest.

The slow test builds the wheel and installs it into a fresh venv, so it needs pip to reach PyPI (or a
cache holding jax, jaxlib and numpy):

  python -m pytest -m slow tests/test_packaging.py     (about a minute; .ci/run runs it)
"""

import ast
import os
from pathlib import Path
import shutil
import subprocess
import sys
import textwrap
import zipfile

import pytest

REPO = Path(__file__).resolve().parents[1]

# module -> (a third-party package it imports, the extra(s) its error message must name).
OPTIONAL = {
  "aplx.train": ("flax", "train,data"),
  "aplx.models": ("flax", "train"),
  "aplx.rundir": ("etils", "train"),
  "aplx.distributed": ("absl", "train"),
  "aplx.data": ("tensorflow_datasets", "data"),
}


def _run(code, python=sys.executable, **kwargs):
  return subprocess.run(
    [python, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300, **kwargs
  )


@pytest.mark.parametrize("module", sorted(OPTIONAL))
def test_missing_extra_names_the_extra(module):
  package, extras = OPTIONAL[module]
  # `sys.modules[name] = None` makes `import name` raise ModuleNotFoundError, as if not installed.
  result = _run(f"""
    import sys
    sys.modules[{package!r}] = None
    try:
      import {module}
    except ImportError as e:
      print(e)
      print(repr(e.__cause__))
    else:
      print("imported")
  """)
  assert result.returncode == 0, result.stderr
  message, cause = result.stdout.strip().splitlines()[-2:]
  kind = "extras" if "," in extras else "extra"
  assert message.startswith(f"{module}"), message
  assert f"needs the '{extras}' {kind}: pip install 'aplx[{extras}]'" in message, message
  assert "Error" in cause, cause  # the original error is chained, for the real reason


def test_missing_data_extra_for_the_trainer_names_both_extras():
  # The trainer imports aplx.data: without TFDS, `import aplx.train` must not ask for 'train' alone.
  result = _run("""
    import sys
    sys.modules["tensorflow_datasets"] = None
    try:
      import aplx.train
    except ImportError as e:
      print(e)
      print(e.__cause__)
  """)
  assert result.returncode == 0, result.stderr
  message, cause = result.stdout.strip().splitlines()[-2:]
  assert "pip install 'aplx[train,data]'" in message, message
  assert "pip install 'aplx[data]'" in cause, cause


@pytest.mark.parametrize("package", ["flax", "tensorflow_datasets", "matplotlib"])
def test_experiments_without_the_extra_names_it(package):
  # A `pip install -e .` clone runs `python -m experiments.main`: the error must name the install.
  result = _run(
    f"""
    import sys
    sys.modules[{package!r}] = None
    try:
      import experiments.main
    except ImportError as e:
      print(e)
    else:
      print("imported")
  """,
    cwd=REPO,
  )
  assert result.returncode == 0, result.stderr
  message = result.stdout.strip().splitlines()[-1]
  assert f"needs the 'experiments' extra ({package} not installed)" in message, message
  assert "pip install -e '.[experiments]'" in message, message


def test_core_modules_import_without_the_extras():
  blocked = sorted({package for package, _ in OPTIONAL.values()} | {"optax", "orbax", "grain", "chex"})
  result = _run(f"""
    import sys
    for name in {blocked!r}:
      sys.modules[name] = None
    import aplx.losses, aplx.noise
    print("ok")
  """)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "ok"


def _aplx_import_graph() -> dict[str, set[str]]:
  """module -> the aplx modules it imports (anywhere in the file), read from the sources with `ast`.

  `from pkg import name` counts as importing `pkg.name` when that is a module, else `pkg`. A module's
  imports of its own parent packages are left out: Python initialises a parent before its children.
  """
  files = {}
  for f in (REPO / "aplx").rglob("*.py"):
    parts = f.relative_to(REPO).with_suffix("").parts
    files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
  graph = {}
  for name, f in files.items():
    deps = set()
    for node in ast.walk(ast.parse(f.read_text())):
      if isinstance(node, ast.Import):
        deps.update(a.name for a in node.names if a.name in files)
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in files:
        deps.update(
          f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module for a in node.names
        )
    graph[name] = {d for d in deps if d != name and not name.startswith(d + ".")}
  return graph


def test_aplx_imports_form_no_cycle():
  # Downward imports only: what two modules share lives in a module below both (e.g. cifar_n takes the
  # CIFAR readers from aplx.data._readers, not from prepare, which imports cifar_n).
  graph = _aplx_import_graph()
  done, path = set(), []

  def visit(name):
    if name in path:
      raise AssertionError("import cycle: " + " -> ".join(path[path.index(name) :] + [name]))
    if name not in done:
      path.append(name)
      for dep in sorted(graph[name]):
        visit(dep)
      path.pop()
      done.add(name)

  for name in sorted(graph):
    visit(name)
  assert graph["aplx.data.prepare"] >= {"aplx.data.cifar_n", "aplx.data.real_noise"}  # The graph is read.


@pytest.mark.slow
def test_bare_install_into_a_fresh_venv(tmp_path):
  """`pip install <wheel>` resolves only jax and numpy; losses and noise work, the extras' modules say so."""
  src = tmp_path / "src"  # build from a copy: setuptools writes build/ and *.egg-info beside the sources
  src.mkdir()
  for name in ("pyproject.toml", "README.md", "LICENSE", "NOTICE"):
    shutil.copy(REPO / name, src / name)
  shutil.copytree(REPO / "aplx", src / "aplx", ignore=shutil.ignore_patterns("__pycache__"))
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
  subprocess.run(
    [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(src)],
    check=True,
    env=env,
  )
  (wheel,) = (tmp_path / "dist").glob("aplx-*.whl")
  names = zipfile.ZipFile(wheel).namelist()
  assert "aplx/losses/__init__.py" in names and "aplx/_deps.py" in names
  assert {"LICENSE", "NOTICE"} <= {n.rsplit("/", 1)[-1] for n in names if ".dist-info/licenses/" in n}, names
  # experiments/ (configs, sweeps) is research code run from a clone, not part of the package.
  assert not [n for n in names if n.startswith(("experiments/", "tests/", "benchmarks/"))], names

  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
  python = str(venv / "bin" / "python")
  subprocess.run([python, "-m", "pip", "install", "-q", str(wheel)], check=True, env=env)

  result = _run(
    """
    import importlib.metadata, importlib.util
    import jax.numpy as jnp
    import aplx.losses, aplx.noise
    for name in ("flax", "optax", "orbax", "tensorflow_datasets", "grain", "chex", "matplotlib"):
      assert importlib.util.find_spec(name) is None, name + " was installed by a bare install"
    loss = aplx.losses.get("nce+rce")(jnp.zeros((2, 10)), jnp.array([0, 1]))
    assert loss.shape == (2,), loss.shape
    try:
      import aplx.models
    except ImportError as e:
      print(e)
    print(sorted(d.metadata["Name"].lower() for d in importlib.metadata.distributions()))
    """,
    python=python,
    env=env,
    cwd=tmp_path,  # not the repository: import the installed package
  )
  assert result.returncode == 0, result.stderr
  lines = result.stdout.strip().splitlines()
  assert "pip install 'aplx[train]'" in lines[0], lines
  assert "aplx" in lines[1] and "jax" in lines[1] and "numpy" in lines[1], lines
