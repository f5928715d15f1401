"""Latency measurement: device profiles, runners (local, ssh, adb, estimate) and statistics."""
