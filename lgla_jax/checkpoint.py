"""orbax checkpoints of the train state together with the data position.

Each checkpoint holds ``state`` (the ``TrainState``) and ``meta`` (JSON): the epoch, the
global step (which is the input pipeline's position, see ``input_pipeline``), and what the
data position depends on (seed, training-set size, global batch). Restoring with a
different data set or batch size is refused instead of silently continuing elsewhere.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class CheckpointError(ValueError):
  """A checkpoint that cannot be restored into this run."""


class Checkpointer:
  """Saves every few epochs, keeps the last ``keep``; collective on multi-host runs."""

  def __init__(self, directory: str, keep: int = 2):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        item_names=("state", "meta"))

  def latest_step(self):
    return self._manager.latest_step()

  def all_steps(self):
    return list(self._manager.all_steps())

  def save(self, step: int, state, meta: dict) -> None:
    self._manager.save(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

  def restore(self, step: int, abstract_state):
    """Restore ``step`` into the shapes and shardings of ``abstract_state``."""
    try:
      restored = self._manager.restore(int(step), args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001 - orbax raises many types for unreadable data
      raise CheckpointError(
          f"checkpoint {self.directory}/{step} cannot be restored ({type(e).__name__}: "
          f"{str(e).splitlines()[0][:300] if str(e) else ''}). It is corrupt or from a "
          f"different model/config: delete that step folder to resume from an older "
          f"checkpoint, or start a new workdir") from e
    return restored.state, dict(restored.meta)

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()


def resolve(path: str) -> tuple[str, int | None]:
  """A workdir, a checkpoints folder or one step folder -> (checkpoints folder, step or None)."""
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint path {path} does not exist")
  if os.path.isdir(os.path.join(path, "state")) and os.path.basename(path).isdigit():
    return os.path.dirname(path), int(os.path.basename(path))
  if os.path.isdir(os.path.join(path, "checkpoints")):
    return os.path.join(path, "checkpoints"), None
  return path, None


def abstract(state, sharding):
  """Shapes, dtypes and sharding of ``state`` (what ``restore`` fills)."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)
