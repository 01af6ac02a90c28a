"""One trial: the pipeline through the public `wsss` API, and the cluster-wide stage leases."""
