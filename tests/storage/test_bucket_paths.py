"""storage.paths against a fake GCS server: atomic writes and the create-if-absent lock."""

from lgla_jax.storage import paths


def test_write_atomic_and_read_back(gcs):
  p = paths.path(gcs) / "sub" / "a.json"
  paths.write_atomic(p, '{"x": 1}')
  assert p.read_text() == '{"x": 1}'
  paths.write_atomic(p, b"2")
  assert p.read_bytes() == b"2"


def test_create_if_absent_is_exclusive(gcs):
  p = paths.path(gcs) / ".lock"
  assert paths.create_if_absent(p, "one") is True
  assert paths.create_if_absent(p, "two") is False
  assert p.read_text() == "one"
  p.unlink()
  assert paths.create_if_absent(p, "three") is True


def test_create_if_absent_unsupported_store():
  assert paths.create_if_absent("s3://b/x", "y") is None
