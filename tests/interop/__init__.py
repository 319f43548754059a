"""Interop tests: our stack against real Linux peers in private network namespaces."""
