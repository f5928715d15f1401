"""Datasets: the built-in generated sets (no download) and user folders."""
