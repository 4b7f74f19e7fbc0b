"""Training: the run record and its setup (``run``), the loop (``loop``), what feeds it
(``feed``), the jitted steps (``steps``), the replica axis (``replicas``), the state and
the mesh (``state``, ``sharding``), checkpoints, resume and the workdir's lock
(``checkpoint``, ``resume``, ``workdir``), the processes of a multi-process run watching
each other (``peers``), evaluation and epoch selection (``evaluation``,
``selection``) and evaluating a saved checkpoint (``evaluate_checkpoint``).

The package itself imports nothing, so that its modules can import each other without a
cycle through this file. A notebook imports the module it needs:
``from lgla_jax.train import loop, run`` gives ``run.setup(config)`` and
``loop.train_and_evaluate(config, workdir)``; ``resume.request_stop()`` stops a run.
"""
