"""Definitions of the reserved_job_name example."""
