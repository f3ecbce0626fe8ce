"""The Ray wing: the only package that imports `ray` (the sweep driver and workers, the Ray Data
jobs, Ray Tune, the cluster connection)."""
