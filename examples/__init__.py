"""Runnable examples of taskflow (run them from the repository root)."""
