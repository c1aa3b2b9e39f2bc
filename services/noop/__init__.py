"""No-op Serve applications: the data plane's floor (benchmarks/dataplane_bench.py)."""
