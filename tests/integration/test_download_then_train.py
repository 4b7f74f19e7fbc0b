"""Downloads of the original CIFAR archive and Fashion-MNIST IDX files, against a local
HTTP server on 127.0.0.1 (no test touches any other address)."""

import hashlib

import numpy as np
import pytest

from lgla_jax.train import loop
from lgla_jax.data import download
from lgla_jax.data import sources
from helpers import config_of, cifar10_archive


@pytest.mark.integration
def test_fresh_download_trains_the_quick_config_and_is_reused_offline(server, tmp_path, capfd):
  remote = server("cifar10", 0, cifar10_archive(tmp_path))
  data = tmp_path / "data"
  config = config_of("cifar10_ir100", **{"dataset.data_dir": str(data), "dataset.max_per_class": 100})
  assert config.dataset.source == "cifar_archive" and config.dataset.download  # the defaults
  result = loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert np.isfinite(result["final"]["top1"])
  assert sorted(p.name for p in data.iterdir()) == ["cifar-10-python.tar.gz", "cifar-10-python.tar.gz.lock"]
  assert hashlib.md5((data / remote.filename).read_bytes()).hexdigest() == remote.md5
  err = capfd.readouterr().err
  assert "downloaded cifar-10-python.tar.gz" in err and "MD5 checked" in err
  # A second run needs no network: the table now points at a closed port.
  download.FILES["cifar10"][0] = download.Remote(remote.filename, "http://127.0.0.1:9/x", remote.md5)
  splits = sources.load(config.dataset)
  assert len(splits.test.labels) == 30 and len(server.handler.requests) == 1


