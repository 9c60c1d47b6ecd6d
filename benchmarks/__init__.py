"""Benchmarks of dropres-lab against a plain nanoGPT-style baseline (not part of the package)."""
