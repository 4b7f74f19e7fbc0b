"""Every module of the package, and every public function, class and method in it, has a
docstring (the guide's rule, checked on the source so that no import is needed)."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "lgla_jax"


def _missing(path: pathlib.Path) -> list[str]:
  """``file:line name`` of each public definition of ``path`` without a docstring."""
  tree = ast.parse(path.read_text())
  found = [] if ast.get_docstring(tree) else [f"{path.name}: the module"]

  def visit(nodes, prefix=""):
    for node in nodes:
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        name = prefix + node.name
        if not node.name.startswith("_") and not ast.get_docstring(node):
          found.append(f"{path.name}:{node.lineno} {name}")
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
          visit(node.body, name + ".")

  visit(tree.body)
  return found


def test_every_public_function_class_and_module_has_a_docstring():
  files = sorted(PACKAGE.rglob("*.py"))
  assert len(files) > 30  # the package is there
  missing = [m for path in files for m in _missing(path)]
  assert not missing, "no docstring:\n" + "\n".join(missing)


def test_the_check_finds_what_lacks_a_docstring(tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text("def public():\n  pass\n\n\nclass Thing:\n  '''Doc.'''\n\n"
                 "  def method(self):\n    pass\n\n  def _private(self):\n    pass\n\n\n"
                 "def _helper():\n  pass\n")
  assert _missing(bad) == ["bad.py: the module", "bad.py:1 public", "bad.py:8 Thing.method"]
