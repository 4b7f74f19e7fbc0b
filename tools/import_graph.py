"""The import graph of ``lgla_jax/``: its modules, its cycles and its imports that point up.

  python tools/import_graph.py [--package=lgla_jax] [--json]

Reads the source with ``ast`` only (nothing is imported). A module imports another when it
says ``import lgla_jax.x``, ``from lgla_jax.x import y`` (``lgla_jax.x.y`` when ``y`` is a
module) or a relative form of those. The layers, top to bottom:

  6 entry points (main, export, benchmark, and any other module at the package root that
    is not a leaf library)
  5 train/   4 report/   3 config/   2 data/ models/ losses/   1 augment/ interop/
  0 leaf libraries at the root (long_tail, optim, errors), storage/ (the path type every file
    goes through) and the package's __init__

An import is *upward* when it goes to a higher layer. ``from lgla_jax.x import y`` imports
the package ``lgla_jax.x`` as well as ``y``, so a package ``__init__`` that re-exports a
module which reaches its siblings through the package shows up as a cycle; a package's
``__init__`` is part of its folder's layer. Also listed: imports made inside a
function (``deferred``), which the layering allows only to defer a heavy optional
dependency, never for a module of the package, and imports of package modules that do not
exist (``missing``: found only when the line runs). Exit status 1 if there is any of those.
"""

from __future__ import annotations

import argparse
import ast
import json
import pathlib
import sys

LAYERS = {"train": 5, "report": 4, "config": 3, "data": 2, "models": 2, "losses": 2,
          "augment": 1, "interop": 1, "storage": 0}
LEAVES = {"long_tail", "optim", "errors", "__init__"}
ENTRY = 6


def modules(root: pathlib.Path, package: str) -> dict[str, pathlib.Path]:
  """Dotted module name -> file, for every ``.py`` file of the package."""
  found = {}
  for path in sorted(root.rglob("*.py")):
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
      parts = parts[:-1]
    found[".".join([package] + parts)] = path
  return found


def layer(name: str, package: str) -> int:
  """The layer of a dotted module name (see the module docstring)."""
  parts = name.split(".")[1:]
  if not parts:
    return 0
  if parts[0] in LAYERS:
    return LAYERS[parts[0]]
  return 0 if parts[0] in LEAVES else ENTRY


def _resolve(node, current: str, is_package: bool, known, package: str = "lgla_jax",
             missing: list | None = None) -> list[str]:
  """The package modules an import node names (relative forms resolved); names of the
  package that are no module of it go to ``missing``."""
  missing = [] if missing is None else missing
  if isinstance(node, ast.Import):
    missing += [a.name for a in node.names
                if a.name.startswith(package + ".") and a.name not in known]
    return [a.name for a in node.names if a.name in known]
  base = node.module or ""
  if node.level:
    anchor = current.split(".")
    anchor = anchor if is_package else anchor[:-1]
    anchor = anchor[:len(anchor) - node.level + 1]
    base = ".".join(anchor + ([base] if base else []))
  out = []
  for alias in node.names:
    full = f"{base}.{alias.name}"
    if full in known:
      out.append(full)
    elif base in known:
      out.append(base)
    elif base == package and alias.name not in known.get(f"{package}.__init__", ()):
      missing.append(full)  # (a name the package's own __init__ does not define)
    elif base.startswith(package + ".") and base not in known:
      missing.append(full)
  return sorted(set(out))


def edges(found: dict[str, pathlib.Path]) -> tuple[dict[str, set], list, list]:
  """``(imports, deferred, missing)``: each module's package imports at module level, the
  ``(module, imported, line)`` of package imports made inside a function, and the
  ``(module, name, line)`` of imports of package modules that do not exist."""
  imports, deferred, missing = {}, [], []
  root = next((n for n in found if n.endswith(".__init__") and n.count(".") == 1), None)
  if root is not None:  # the names the package's __init__ defines, for ``from pkg import x``
    tree = ast.parse(found[root].read_text())
    defined = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
               if isinstance(t, ast.Name)} | {
        a.asname or a.name for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in n.names}
    found = _Known(found, {root: defined})
  for name, path in found.items():
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    imports[name] = set()
    for node in ast.walk(tree):
      if not isinstance(node, (ast.Import, ast.ImportFrom)):
        continue
      gone = []
      targets = _resolve(node, name, is_package, found, name.split(".")[0], gone)
      if isinstance(node, ast.ImportFrom) and node.module in found and not node.level:
        targets = sorted(set(targets) | {node.module})  # ``from pkg import x`` runs pkg first
      targets = [t for t in targets if t != name]
      missing += [(name, g, node.lineno) for g in gone]
      if _inside_function(tree, node):
        deferred += [(name, t, node.lineno) for t in targets]
      else:
        imports[name].update(targets)
  return imports, deferred, missing


class _Known(dict):
  """The modules found, plus ``get(root __init__)``: the names that __init__ defines."""

  def __init__(self, found, defined):
    super().__init__(found)
    self._defined = defined

  def get(self, key, default=None):
    """The names ``key`` (the root __init__) defines, else ``default``."""
    return self._defined.get(key, default)


def _inside_function(tree, target) -> bool:
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      if any(child is target for child in ast.walk(node)):
        return True
  return False


def cycles(imports: dict[str, set]) -> list[list[str]]:
  """The import cycles, one per strongly connected component of more than one module
  (or a module importing itself), each as its sorted members."""
  index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in imports.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1 or v in imports.get(v, ()):
        out.append(sorted(component))

  sys.setrecursionlimit(10_000)
  for v in sorted(imports):
    if v not in index:
      visit(v)
  return out


def upward(imports: dict[str, set], package: str) -> list[tuple[str, str]]:
  """``(importer, imported)`` pairs where the imported module sits in a higher layer."""
  return sorted((a, b) for a, targets in imports.items() for b in targets
                if layer(b, package) > layer(a, package))


def report(root: pathlib.Path, package: str) -> dict:
  """Everything the command prints, as data."""
  found = modules(root, package)
  imports, deferred, missing = edges(found)
  return {"modules": {m: sorted(imports[m]) for m in sorted(found)},
          "root_files": sorted(p.name for p in root.glob("*.py")),
          "cycles": cycles(imports), "upward": upward(imports, package),
          "deferred": deferred, "missing": missing}


def main(argv=None) -> int:
  """Print the graph's modules, cycles, upward and deferred imports; 1 if any is wrong."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--package", default="lgla_jax")
  parser.add_argument("--json", action="store_true", help="print one JSON object")
  args = parser.parse_args(argv)
  root = pathlib.Path(__file__).resolve().parents[1] / args.package
  out = report(root, args.package)
  if args.json:
    print(json.dumps(out, indent=1))
  else:
    print(f"{len(out['modules'])} modules, {len(out['root_files'])} .py files at the package "
          f"root: {' '.join(out['root_files'])}")
    for m, targets in out["modules"].items():
      print(f"  {m} (layer {layer(m, args.package)}) -> {', '.join(targets) or '-'}")
    print(f"cycles: {len(out['cycles'])}")
    for c in out["cycles"]:
      print("  " + " <-> ".join(c))
    print(f"upward imports: {len(out['upward'])}")
    for a, b in out["upward"]:
      print(f"  {a} -> {b}")
    print(f"deferred imports of package modules: {len(out['deferred'])}")
    for a, b, line in out["deferred"]:
      print(f"  {a}:{line} -> {b}")
    print(f"imports of package modules that do not exist: {len(out['missing'])}")
    for a, b, line in out["missing"]:
      print(f"  {a}:{line} -> {b}")
  return 1 if out["cycles"] or out["upward"] or out["deferred"] or out["missing"] else 0


if __name__ == "__main__":
  sys.exit(main())
