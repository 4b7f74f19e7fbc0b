"""Device-resident data and multi-step dispatch: the same batches as the host pipeline,
one compilation, exact evaluation, the automatic choices, and the compilation cache."""

import os
import re
import shutil

import jax
import numpy as np
import pytest

from lgla_jax.train import loop
from lgla_jax.train import resume
from lgla_jax.train import run as run_lib
from lgla_jax.train import evaluation
from lgla_jax.train import feed
from lgla_jax.train import sharding
from lgla_jax.train import steps as steps_lib
from helpers import config_of


def _steps_of(config, n):
  mesh = sharding.make_mesh(jax.devices()[:1])
  run = run_lib.setup(config, mesh)
  state, seen = run.state, []
  for k, batch in feed.dispatches(run, 0, n):
    state, metrics = (run.steps.train_chunk if k > 1 or "active" in batch else run.steps.train)(state, batch)
    seen.append((k, jax.device_get(metrics)))
  return run, jax.device_get(state), seen


_ONE_BY_ONE = {}  # placement -> the 14 steps one by one (run, final state, metrics)


@pytest.mark.integration
@pytest.mark.parametrize("unrolled,on_device", [(True, True), (False, True), (False, False)],
                         ids=["cpu_unrolled", "accelerator_loop", "accelerator_loop_host_data"])
def test_a_chunk_of_steps_equals_the_steps_one_by_one(unrolled, on_device, monkeypatch):
  """One epoch of the demo (14 steps: chunks of 4, 4, 4 and 2 + 2 inactive), in both forms
  of a chunk: the CPU's (unrolled) and the accelerators' (a scan with a cond per step,
  run here on the CPU so that the GPU/TPU program is checked without one), the latter also
  with host batches of images and DataParallel BatchNorm groups (the ImageNet-size
  configs' form on a GPU)."""
  monkeypatch.setattr(steps_lib, "unrolled_chunks", lambda mesh: unrolled)
  # A small learning rate keeps float32 noise from growing (early training is chaotic:
  # at lr 0.01 a 3e-7 difference grows to 4e-4 in six steps, and at 1e-3 it reached 1.4e-4
  # in 14 from some initial values), so the comparison checks that the chunk runs the same
  # steps on the same batches (measured at 1e-4: parameters within 6e-8).
  placement = ({"optim.lr": 1e-4, "dataset.on_device": True, "augment.on_device": True}
               if on_device else {"optim.lr": 1e-4, "dataset.on_device": False,
                                  "model.bn_group_size": 8})
  key = tuple(sorted(placement.items()))  # (one step per dispatch: the same in both forms)
  if key not in _ONE_BY_ONE:
    _ONE_BY_ONE[key] = _steps_of(config_of("demo", **placement, steps_per_dispatch=1), 14)
  run1, one, m1 = _ONE_BY_ONE[key]
  run4, four, m4 = _steps_of(config_of("demo", **placement, steps_per_dispatch=4), 14)
  assert int(one.step) == int(four.step) == 14
  losses1 = [float(m["loss"]) for _, m in m1]
  losses4 = [float(x) for k, m in m4 for x in m["loss"][:k]]
  np.testing.assert_allclose(losses4, losses1, rtol=1e-5)
  assert m4[-1][0] == 2 and (m4[-1][1]["loss"][2:] == 0).all()  # skipped steps report zeros
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(four.params)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
  # Full batches and the padded last one ran in one compiled function each way.
  jitted = lambda f: f if hasattr(f, "_cache_size") else f.__wrapped__  # (or bound to the data)
  assert jitted(run1.steps.train)._cache_size() == 1
  assert jitted(run4.steps.train_chunk)._cache_size() == 1
  _, batch = next(iter(feed.dispatches(run4, 0, 4)))
  hlo = run4.steps.lower_train(four, batch).compile().as_text()
  inside = _ops_inside_loops_and_conditionals(hlo)
  if unrolled:
    # On CPU: XLA:CPU runs a convolution inside a loop or a conditional ~25x slower
    # (jax-ml/jax#12868), so none may sit there.
    assert hlo.count("convolution(") >= 4 * 6  # the 4 steps' convolutions (>= 6 per step)
    assert "convolution" not in inside
  else:  # one step's program, looped, each step behind its cond: every convolution inside
    assert re.search(r"\bconditional\(", hlo)
    assert inside.count("convolution") == hlo.count("convolution(") >= 6


def _ops_inside_loops_and_conditionals(hlo: str) -> list[str]:
  """The op names of a compiled HLO module's computations that run inside a while loop or a
  conditional (their bodies, branches and everything those call)."""
  computations = {}
  for block in re.split(r"\n(?=\S)", hlo):  # each computation starts at column 0
    name = re.match(r"(?:ENTRY )?%?([\w.\-]+)", block)
    if name and "{" in block.splitlines()[0]:
      computations[name.group(1)] = block
  calls = lambda text: re.findall(
      r"(?:calls|to_apply|body|condition|true_computation|false_computation)=%?([\w.\-]+)",
      text) + [n for group in re.findall(r"branch_computations=\{([^}]*)\}", text)
               for n in re.findall(r"%?([\w.\-]+)", group)]
  inside = {n for text in computations.values() for line in text.splitlines()
            if re.search(r"\b(while|conditional)\(", line) for n in calls(line)}
  todo = list(inside)
  while todo:
    for called in calls(computations.get(todo.pop(), "")):
      if called not in inside:
        inside.add(called)
        todo.append(called)
  return [op for n in inside for op in re.findall(r"=\s*\S+\s+(\w[\w-]*)\(", computations.get(n, ""))]


@pytest.mark.integration
def test_host_pipeline_compiles_one_step_for_full_and_padded_batches():
  run, _, seen = _steps_of(config_of("demo", **{"dataset.on_device": False}), 14)
  assert len(seen) == 14 and run.steps.train._cache_size() == 1


@pytest.mark.integration
def test_evaluation_on_device_data_equals_the_host_evaluation():
  reports = []
  for on_device in (False, True):
    config = config_of("demo", **{"dataset.on_device": on_device})
    mesh = sharding.make_mesh()
    run = run_lib.setup(config, mesh)
    reports.append(evaluation.run_evaluation(run.steps, run.state, run.splits.test,
                                        run.splits.class_counts, run.config, mesh))
  assert reports[0]["num_images"] == reports[1]["num_images"] == len(run.splits.test.labels)
  for key in ("top1", "many", "medium", "few", "per_class"):
    np.testing.assert_allclose(reports[0][key], reports[1][key], atol=1e-9)


@pytest.mark.integration
@pytest.mark.parametrize("on_device,per_dispatch,seeds", [
    (False, 1, ()), (True, 1, ()), (True, 3, ()), (False, 2, (1, 2))])
def test_steps_compiled_ahead_compile_nothing_later(on_device, per_dispatch, seeds):
  """``setup(compile_ahead=True)`` compiles the training step (one step or a chunk, single
  or replica run) and the evaluation in background threads: once they are joined, the
  loop's first dispatch and the evaluation find them compiled."""
  config = config_of("demo", **{"dataset.on_device": on_device, "batch_size": 24,
                              "steps_per_dispatch": per_dispatch, "replicas.seeds": seeds})
  mesh = sharding.make_mesh()
  compiles = []  # compiled, or loaded from a persistent cache (the tests share one)
  listener = lambda event, duration, **kw: compiles.append(event) if event.endswith(
      "backend_compile_duration") else None
  hit = lambda event, **kw: compiles.append(event) if event.endswith("/cache_hits") else None
  jax.monitoring.register_event_duration_secs_listener(listener)
  jax.monitoring.register_event_listener(hit)
  try:
    run = run_lib.setup(config, mesh, compile_ahead=True)
    assert sorted(run.compiling) == ["eval", "train"]
    for thread in run.compiling.values():
      thread.join()
    assert len(compiles) >= 3  # the state's initialisation, the training and the eval step
    del compiles[:]
    n, batch = next(iter(feed.dispatches(run, 0, run.steps_per_epoch)))
    state, metrics = (run.steps.train_chunk if per_dispatch > 1 else run.steps.train)(
        run.state, batch)
    jax.block_until_ready(metrics)
    assert compiles == [] and n == per_dispatch
    report = evaluation.run_evaluation(run.steps, state, run.splits.test,
                                       run.splits.class_counts, run.config, run.mesh)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
    jax.monitoring.unregister_event_listener(hit)
  assert compiles == [] and report["num_images"] == len(run.splits.test.labels)


@pytest.mark.integration
def test_a_rerun_takes_its_compiled_steps_from_the_workdirs_cache(tmp_path, monkeypatch):
  config = config_of("demo", num_epochs=1, eval_every_epochs=0)
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "shared"))  # JAX's variable
  loop.train_and_evaluate(config, str(tmp_path / "other"))  # the process's cache moves on
  assert len(os.listdir(tmp_path / "shared")) >= 2
  assert not (tmp_path / "other" / "compilation_cache").exists()
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")  # unset: the workdir's own
  loop.train_and_evaluate(config, str(tmp_path / "run"))
  cache = tmp_path / "run" / "compilation_cache"
  assert cache.is_dir() and len(os.listdir(cache)) >= 2  # the train and eval steps at least
  shutil.rmtree(tmp_path / "run" / "checkpoints")  # train again from scratch, same workdir
  hits = []
  listener = lambda event, **kw: hits.append(event) if event.endswith("/cache_hits") else None
  jax.monitoring.register_event_listener(listener)
  try:
    loop.train_and_evaluate(config, str(tmp_path / "run"))
    assert len(hits) >= 2
    hits.clear()  # a resume (stopped after its first step) loads them too
    shutil.rmtree(tmp_path / "run" / "checkpoints")
    resume.request_stop()
    assert loop.train_and_evaluate(config, str(tmp_path / "run")) == {"stopped_at_step": 1}
    loop.train_and_evaluate(config, str(tmp_path / "run"))
    assert len(hits) >= 3  # the first run's train step, then the resumed run's train and eval
  finally:
    jax.monitoring.unregister_event_listener(listener)
  # A configured folder wins over JAX's variable; "" keeps no cache at all (the choice
  # made at the start of every run; that a chosen folder fills is shown above).
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "shared"))
  loop.set_compilation_cache(config_of("demo", compilation_cache_dir=str(tmp_path / "mine")),
                               str(tmp_path / "configured"))
  assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine")
  loop.set_compilation_cache(config_of("demo", compilation_cache_dir=""), str(tmp_path / "none"))
  assert jax.config.jax_compilation_cache_dir is None
  loop.set_compilation_cache(config_of("demo"), str(tmp_path / "none"))
  assert jax.config.jax_compilation_cache_dir == str(tmp_path / "shared")
