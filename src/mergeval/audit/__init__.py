"""Checking the judge and the suite: calibration, canaries, the rubric-check app."""
