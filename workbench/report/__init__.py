"""Run records (``run.json``, one versioned schema) and the reports built from them."""
