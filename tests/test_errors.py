"""The entry points' error contract: one line on stderr, status 2 for usage, 1 for a run's
problem, a traceback only for a bug."""

import pytest

from lgla_jax import errors


@pytest.mark.parametrize("exc,status", [
    (errors.ConfigError("config.batch_size: must be positive"), 2),
    (errors.FlagError("--top_k must be positive"), 2),
    (errors.NotFound("no such file: x.png"), 1),
    (errors.WorkdirError("workdir busy"), 1),
])
def test_one_line_exit_maps_each_base_to_its_status(exc, status, capsys):
  with pytest.raises(SystemExit) as stop:
    with errors.one_line_exit():
      raise exc
  assert stop.value.code == status
  assert capsys.readouterr().err == f"error: {exc}\n"


def test_extra_types_join_a_base_and_bugs_keep_their_traceback(capsys):
  with pytest.raises(SystemExit) as stop:
    with errors.one_line_exit(usage=(ValueError,)):
      raise ValueError("bad value")
  assert stop.value.code == errors.EXIT_USAGE and capsys.readouterr().err == "error: bad value\n"
  with pytest.raises(KeyError):  # not one of ours: a bug, raised as it is
    with errors.one_line_exit(usage=(ValueError,)):
      raise KeyError("bug")
  with errors.one_line_exit():  # nothing raised: nothing printed, no exit
    pass
  assert capsys.readouterr().err == ""
