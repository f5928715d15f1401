"""Optimization: structured channel pruning (more to come: quantization sensitivity, QAT)."""
