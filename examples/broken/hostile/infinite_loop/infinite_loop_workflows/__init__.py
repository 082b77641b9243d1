"""Hostile definitions: never finishes importing."""
