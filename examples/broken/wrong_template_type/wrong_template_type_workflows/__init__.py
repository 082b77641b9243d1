"""Definitions of the wrong_template_type example."""
