"""Exporters shipped with Eagle Eye."""
