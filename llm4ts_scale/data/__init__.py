"""Data path: CSV/Parquet -> validated Arrow store -> streamed channel-independent windows.

Modules: frame (read + validate), calendar (integer time features), splits (borders),
prepare (write a store), store (read a store), sources (resolve a path or name), windows (stream);
registry and fetch download the paper's datasets.
"""
