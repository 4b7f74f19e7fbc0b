import os

import nbclient
import nbformat
import pytest

from lgla_jax.train import loop
from helpers import ROOT, config_of

pytestmark = pytest.mark.integration  # Executes the notebook (and trains a demo workdir).

NOTEBOOK = ROOT / "notebooks" / "loss_inspection.ipynb"


def _execute(env_workdir=None):
  nb = nbformat.read(NOTEBOOK, as_version=4)
  old = os.environ.get("LGLA_WORKDIR")
  if env_workdir:
    os.environ["LGLA_WORKDIR"] = str(env_workdir)
  try:
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parents[1])}}).execute()
  finally:
    os.environ.pop("LGLA_WORKDIR", None)
    if old is not None:
      os.environ["LGLA_WORKDIR"] = old
  return nb


def _text(nb):
  return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_notebook_runs_top_to_bottom():
  nb = _execute()  # raises CellExecutionError on any failing cell
  images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
  assert images >= 4
  assert "LGLA loss" in _text(nb)


def test_notebook_on_a_trained_workdir(tmp_path):
  loop.train_and_evaluate(config_of("demo"), str(tmp_path))
  assert "mean AAW weight per expert on test images" in _text(_execute(tmp_path))


def test_notebook_loads_a_replica_run(tmp_path):
  loop.train_and_evaluate(config_of("demo", "quick", **{"replicas.seeds": (0, 1)}), str(tmp_path))
  text = _text(_execute(tmp_path))
  assert "mean +- std over 2 replicas" in text and "inspecting replica 0: seed 0" in text
  assert "mean AAW weight per expert on test images" in text
