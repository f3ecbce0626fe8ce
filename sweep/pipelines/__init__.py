"""The Ray wing: the only package that imports `ray` (sweep driver and workers, Ray Data jobs, Tune, the cluster connection)."""
