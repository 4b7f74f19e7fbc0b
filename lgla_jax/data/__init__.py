"""Data: the catalog of known data sets (``catalog``), sources found by name (``registry``,
``sources``, ``readers``, ``tfds_source``, ``split_files``, ``image_folder``), downloads
(``download``), checks before decoding (``file_checks``: broken files and duplicates;
``memory``: whether decoded images fit), the grain host pipeline (``pipeline``) and data kept
on the devices (``on_device``)."""
