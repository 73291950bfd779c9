"""Loaders of offline data sets and synthetic task generators."""
