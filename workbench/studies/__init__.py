"""Workflows that sit above the executor: the INT8 study and the before/after comparison of an
optimization. Each builds a plan and runs it through ``workbench.executor.execute``."""
