"""Host cost of the ImageNet-size recipes per image and core: decode + the whole PIL recipe
against decode + RandomResizedCrop only (what the host keeps with augment.on_device=True).

  python tools/host_recipe_speed.py [num_files] [repeats]

Synthetic 500x375 JPEGs (quality 90, ImageNet's typical size), 224x224 output, one process.
Prints one JSON line per (recipe, stage) with images/s per core.
"""

import io
import json
import sys
import time

import numpy as np
from PIL import Image

from lgla_jax.augment import imagenet_host


def main(num_files: int = 32, repeats: int = 4):
  rng = np.random.default_rng(0)
  files = []
  for _ in range(num_files):
    img = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    img.resize((500, 375), Image.BILINEAR).save(buffer, "JPEG", quality=90)
    files.append(buffer.getvalue())

  def rate(fn):
    start = time.perf_counter()
    for r in range(repeats):
      for i, data in enumerate(files):
        with Image.open(io.BytesIO(data)) as img:
          img.load()
          fn(img, np.random.default_rng([r, i]))
    return round(repeats * num_files / (time.perf_counter() - start), 1)

  print(json.dumps({"stage": "decode", "images_per_s_per_core": rate(lambda img, g: img.convert("RGB"))}))
  for recipe in imagenet_host.RECIPES:
    for crop_only in (False, True):
      speed = rate(lambda img, g: imagenet_host.train_image(img, g, recipe, 224, crop_only))
      print(json.dumps({"recipe": recipe, "stage": "crop only" if crop_only else "whole recipe",
                        "images_per_s_per_core": speed}))


if __name__ == "__main__":
  main(*(int(a) for a in sys.argv[1:]))
