"""The quantization family: calibration, QDQ insertion and the rewrites around QDQ."""
