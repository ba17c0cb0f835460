"""Sample jobs for the calibration tests: a square one and a non-square, odd-sized one that
extends past [0, 1] (extend fit)."""

from creps.calib.samples import Job

JOBS = (Job(0, 1.0, 24, 24), Job(1, 0.7, 37, 13))
