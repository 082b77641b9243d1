"""Definitions of the command_format example."""
