"""Calibration: observers that turn activation statistics into ranges."""
