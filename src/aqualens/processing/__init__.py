"""Processing engine: durable jobs, the Dask runner, batch kinds, event-driven services."""
