"""tsrx benchmarks: ``python -m bench [--smoke] [--only NAME ...]`` prints a table and writes
``bench/results.json``. Every speed figure is a ratio measured in one process on one machine."""
