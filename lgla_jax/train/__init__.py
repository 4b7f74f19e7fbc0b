"""Training: the run record and its setup (``run``), the loop (``loop``), what feeds it
(``feed``), the jitted steps (``steps``), the replica axis (``replicas``), the state and
the mesh (``state``, ``sharding``), checkpoints, resume and the workdir's lock
(``checkpoint``, ``resume``, ``workdir``), the processes of a multi-process run watching
each other (``peers``), evaluation and epoch selection (``evaluation``,
``selection``) and evaluating a saved checkpoint (``evaluate_checkpoint``).

The names a notebook needs are importable from here: ``train.train_and_evaluate``,
``train.setup``, ``train.request_stop``.
"""

from lgla_jax.train.loop import Trainer, set_compilation_cache, train_and_evaluate
from lgla_jax.train.resume import STOP, request_stop
from lgla_jax.train.run import Placement, Run, initial_state, load_weights, resolve_placement, setup

__all__ = ["STOP", "Placement", "Run", "Trainer", "initial_state", "load_weights",
           "request_stop", "resolve_placement", "set_compilation_cache", "setup",
           "train_and_evaluate"]
