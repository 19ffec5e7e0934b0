"""Receivers (telemetry sources) shipped with Eagle Eye."""
