"""What a run reports: accuracy and calibration from the evaluation counts (``metrics``),
``report.json`` with its plots (``writer``), the console, ``metrics.jsonl`` and TensorBoard
(``progress``), and a replica run's tables and plots (``replicas``)."""
