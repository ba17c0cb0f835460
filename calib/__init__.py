"""creps.calib: FP16 range analysis and FP16 graphs, INT8 Q/DQ calibration, on the CPU."""

from creps.calib.bundle import calibrate_bundle
from creps.calib.samples import DEFAULT_JOBS, Job

__all__ = ["DEFAULT_JOBS", "Job", "calibrate_bundle"]
