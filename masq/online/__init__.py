"""Online detection: which routes are usable now (detectors live beside this file)."""
