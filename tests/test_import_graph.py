"""The package's layering, measured on its import graph (tools/import_graph.py)."""

import importlib.util

from helpers import ROOT

_spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools" / "import_graph.py")
import_graph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(import_graph)


def test_no_cycles_no_upward_or_deferred_imports_and_a_small_root():
  out = import_graph.report(ROOT / "lgla_jax", "lgla_jax")
  assert out["cycles"] == []
  assert out["upward"] == []
  assert out["deferred"] == []
  assert out["missing"] == []
  # The root holds the entry points (main, export, benchmark, data_summary, predict: each a
  # ``python -m lgla_jax.NAME`` command), the leaf libraries (long_tail, optim, errors) and
  # __init__; anything else belongs in a folder by its role.
  assert set(out["root_files"]) <= {"__init__.py", "main.py", "export.py", "benchmark.py",
                                    "data_summary.py", "predict.py", "long_tail.py", "optim.py",
                                    "errors.py"}, out["root_files"]
  assert len(out["modules"]) > 40  # the whole package was read


def test_the_tool_finds_what_it_must(tmp_path):
  pkg = tmp_path / "pkg"
  (pkg / "train").mkdir(parents=True)
  (pkg / "data").mkdir()
  (pkg / "__init__.py").write_text("")
  (pkg / "train" / "__init__.py").write_text("")
  (pkg / "data" / "__init__.py").write_text("")
  (pkg / "data" / "a.py").write_text("from pkg.train import b\n")  # up: data -> train
  (pkg / "train" / "b.py").write_text("from pkg.data import a\n")  # and a cycle
  (pkg / "train" / "c.py").write_text("def f():\n  from pkg.data import a\n")  # deferred
  (pkg / "train" / "d.py").write_text("def g():\n  from pkg import gone\n")  # no such module
  out = import_graph.report(pkg, "pkg")
  assert out["cycles"] == [["pkg.data.a", "pkg.train.b"]]
  # (``from pkg.train import b`` imports the package pkg.train too: both point up)
  assert out["upward"] == [("pkg.data.a", "pkg.train"), ("pkg.data.a", "pkg.train.b")]
  assert [(a, b) for a, b, _ in out["deferred"]] == [("pkg.train.c", "pkg.data"),
                                                   ("pkg.train.c", "pkg.data.a")]
  assert [(a, b) for a, b, _ in out["missing"]] == [("pkg.train.d", "pkg.gone")]
  assert import_graph.main(["--package", "lgla_jax"]) == 0


def test_a_package_init_that_re_exports_is_in_a_cycle_with_modules_importing_through_it(tmp_path):
  pkg = tmp_path / "pkg"
  (pkg / "train").mkdir(parents=True)
  (pkg / "__init__.py").write_text("")
  (pkg / "train" / "__init__.py").write_text("from pkg.train.loop import run\n")  # re-export
  (pkg / "train" / "loop.py").write_text("from pkg.train import state\ndef run():\n  pass\n")
  (pkg / "train" / "state.py").write_text("")
  out = import_graph.report(pkg, "pkg")
  assert out["cycles"] == [["pkg.train", "pkg.train.loop"]]
  # The same module reaching its sibling directly does not go through the package.
  (pkg / "train" / "loop.py").write_text("import pkg.train.state\ndef run():\n  pass\n")
  assert import_graph.report(pkg, "pkg")["cycles"] == []
