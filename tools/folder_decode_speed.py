"""Host decode speed of the image-folder source: images/s of scanning a folder and of decoding
its files into memory (the path every image_size <= 64 run takes), one process.

  python tools/folder_decode_speed.py ROOT [image_size] [repeats]

ROOT is an image folder (e.g. written by tools/write_image_folder.py). Each stage runs
``repeats`` times; prints one JSON line per stage with the median seconds and images/s.
A benchmark, not a test: the numbers depend on the machine and its load.
"""

import json
import platform
import statistics
import sys
import time

from lgla_jax.data import image_folder


def _median_s(fn, repeats: int) -> float:
  """The median wall seconds of ``repeats`` calls of ``fn``."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main(root: str, image_size: int = 32, repeats: int = 3):
  """Times ``scan`` (listing) and ``decode`` (read + PIL decode + resize) of every split."""
  data, _, _ = image_folder.scan(root)
  files = [f for split in data.values() for f in split.images.paths]
  n = len(files)
  stages = {
      "scan": lambda: image_folder.scan(root),
      "decode": lambda: image_folder.decode(files, image_size, "skip"),
      "decode+hash": lambda: image_folder.decode(files, image_size, "skip", []),
  }
  for stage, fn in stages.items():
    seconds = _median_s(fn, repeats)
    print(json.dumps({"stage": stage, "images": n, "image_size": image_size,
                      "median_s": round(seconds, 3), "images_per_s": round(n / seconds),
                      "repeats": repeats, "machine": platform.node(),
                      "processor": platform.processor() or platform.machine()}), flush=True)


if __name__ == "__main__":
  main(sys.argv[1], *(int(a) for a in sys.argv[2:4]))
