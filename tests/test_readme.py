"""The README's core-API example runs as written."""

import pathlib
import re

README = pathlib.Path(__file__).parents[1] / "README.md"


def test_core_api_example_runs():
  blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
  example = [b for b in blocks if b.startswith("import numpy as np, jax")]
  assert len(example) == 1
  namespace = {}
  exec(compile(example[0], "README.md", "exec"), namespace)
  assert namespace["out"]["logits"].shape == (3, 2, 100)
  assert namespace["per_expert"].shape == (3,) and float(namespace["loss"]) > 0
