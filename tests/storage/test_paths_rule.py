"""Every file lgla_jax reads or writes goes through ``storage.paths.path()`` (etils.epath,
so a ``gs://`` URL works wherever a folder does): no builtin ``open``, ``os.path``,
``os.makedirs`` & co. or ``shutil`` in the package, except the files listed below."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2] / "lgla_jax"

OS_CALLS = {"makedirs", "mkdir", "remove", "unlink", "replace", "rename", "listdir", "rmdir",
            "scandir", "walk", "stat", "open"}

# file -> why it may touch the local file system directly.
ALLOWED = {
    "storage/paths.py": "the path layer itself (expands ~, makes local paths absolute)",
    "train/loop.py": "the XLA compilation cache is a local folder (os.path on its path only)",
    "train/workdir.py": "the local lock is an fcntl lock on a local file (a bucket uses create_if_absent)",
    "main.py": "derives the default workdir name from the config file's name (string ops)",
    "config/overrides.py": "config files are local Python files that ml_collections imports",
}


def offences(tree):
  """``(line, what)`` for every direct file-system call in ``tree``."""
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
      found.append((node.lineno, "open("))
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
      if node.value.id == "os" and node.attr in OS_CALLS:
        found.append((node.lineno, f"os.{node.attr}"))
      if node.value.id == "shutil":
        found.append((node.lineno, f"shutil.{node.attr}"))
    if isinstance(node, ast.Attribute) and node.attr == "path" and \
        isinstance(node.value, ast.Name) and node.value.id == "os":
      found.append((node.lineno, "os.path"))
  return found


def test_no_direct_file_access_outside_the_allow_list():
  bad = []
  for f in sorted(ROOT.rglob("*.py")):
    rel = f.relative_to(ROOT).as_posix()
    if rel in ALLOWED:
      continue
    bad += [f"lgla_jax/{rel}:{line}: {what}" for line, what in offences(ast.parse(f.read_text()))]
  assert not bad, "use lgla_jax.storage.paths.path() instead:\n" + "\n".join(bad)


def test_the_allow_list_names_files_that_exist_and_still_need_it():
  for rel in ALLOWED:
    f = ROOT / rel
    assert f.exists(), rel
    assert offences(ast.parse(f.read_text())), f"{rel} no longer needs its ALLOWED entry"


def test_the_rule_catches_each_form():
  src = "import os, shutil\nopen('x')\nos.path.join('a')\nos.makedirs('d')\nshutil.rmtree('d')\n"
  assert [w for _, w in offences(ast.parse(src))] == ["open(", "os.path", "os.makedirs", "shutil.rmtree"] or \
      sorted(w for _, w in offences(ast.parse(src))) == sorted(["open(", "os.path", "os.makedirs", "shutil.rmtree"])
