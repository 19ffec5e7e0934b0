"""Instrumentations shipped with Eagle Eye."""
