"""Workflow definitions of the example team."""
