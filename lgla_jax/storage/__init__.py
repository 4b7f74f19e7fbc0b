"""Where lgla-jax keeps and finds files: one path type for local folders and buckets
(``paths``). Every file the package reads or writes (workdirs, checkpoints, reports, data)
goes through it, so a ``gs://`` URL works wherever a folder does."""
