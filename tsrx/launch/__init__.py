"""Launching runs: run directories, the submitit job, status."""
