"""What every layer uses and that knows no layer: the typed run config and the stage table (config, stages),
one-line user errors (errors), atomic files (io), the cache directory (cache), precision choice (precision),
metrics, safetensors weights (weights), logging (log) and the ridge solvers (ridge)."""
