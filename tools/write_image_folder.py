"""Write Fashion-MNIST's IDX files out as an image folder (ROOT/{train,test}/<class>/*.png).

  python tools/write_image_folder.py OUT_ROOT [--idx_dir=/usr/share/datasets/fashion-mnist]
      [--limit=N] [--imbalance_factor=0.01 --max_per_class=6000 --subset_seed=0]

Class folders are ``NN_<name>`` (zero-padded label first) so that the image-folder source's
sorted class order is the IDX label order; files are ``<index>.png`` with the IDX index
zero-padded to 5 digits, so the name sort within a class is the IDX order. Images are
written as the 32x32 RGB the ``idx`` source makes of them (black 2-pixel border), so the
folder path decodes exactly the idx source's pixels.

With ``--imbalance_factor`` the training split is the official long-tailed subset
(``long_tail.long_tail_indices``: class by class, shuffled within a class) and its files are
named by their position in that subset, so the folder's sorted order is exactly the array
order the ``idx`` source trains on: same images, same order, same batches for a seed.
"""

import argparse
import time

import numpy as np
from PIL import Image

from lgla_jax import long_tail
from lgla_jax.data import catalog, readers
from lgla_jax.storage.paths import path


def folder_name(label: int) -> str:
  """``NN_name``: the label first so that a name sort keeps label order."""
  name = catalog.FASHION_MNIST_NAMES[label].replace("/", "-").replace(" ", "_")
  return f"{label:02d}_{name}"


def main():
  """Write the folders and print the images written per second."""
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("out_root")
  p.add_argument("--idx_dir", default=None)
  p.add_argument("--limit", type=int, default=0, help="first N images per split (0: all)")
  p.add_argument("--imbalance_factor", type=float, default=0.0,
                 help="write the official long-tailed training subset (0: all images)")
  p.add_argument("--max_per_class", type=int, default=6000)
  p.add_argument("--subset_seed", type=int, default=0)
  args = p.parse_args()
  train, test = readers.load_fashion_mnist(args.idx_dir)
  if args.imbalance_factor:
    counts = long_tail.imbalanced_counts(10, args.max_per_class, args.imbalance_factor)
    idx = long_tail.long_tail_indices(train.labels, counts, seed=args.subset_seed)
    train = type(train)(train.images[idx], train.labels[idx])
  start, n = time.perf_counter(), 0
  for split, data in (("train", train), ("test", test)):
    count = args.limit or len(data.labels)
    for label in range(10):
      (path(args.out_root) / split / folder_name(label)).mkdir(parents=True, exist_ok=True)
    for i in range(count):
      out = path(args.out_root) / split / folder_name(int(data.labels[i])) / f"{i:05d}.png"
      with out.open("wb") as f:
        Image.fromarray(np.asarray(data.images[i])).save(f, format="PNG")
      n += 1
  print(f"wrote {n} PNGs in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
  main()
