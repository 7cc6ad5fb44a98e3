"""Benchmarks of pixelbatch against the codec from C and a naive tool (``make bench``)."""
