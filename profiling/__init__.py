"""MAC counting, latency measurement, the CI gate and latency tables. Knows nothing of how a
mask was found."""
