"""Data: the catalog of known data sets (``catalog``), sources found by name (``registry``,
``sources``, ``readers``, ``tfds_source``, ``split_files``), downloads (``download``), the
grain host pipeline (``pipeline``) and data kept on the devices (``on_device``)."""
