"""Definitions of the not_a_dict example."""
