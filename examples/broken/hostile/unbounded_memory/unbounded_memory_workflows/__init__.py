"""Hostile definitions: allocates memory until stopped."""
