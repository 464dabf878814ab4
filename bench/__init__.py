"""Benchmarks: the service against raw Redis doing the same work, in the same run."""
