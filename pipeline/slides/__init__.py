"""Slides: reading regions at any mpp (cuCIM, OpenSlide), mpp metadata, region planning, tissue detection,
the slide index and synthetic slides."""

from pipeline.slides.cache import SlideCache
from pipeline.slides.index import SlideIndex, SlideRecord
from pipeline.slides.mpp import MppError
from pipeline.slides.planning import RegionPlan, RegionTooLargeError, choose_level, footprint_level0, plan_region
from pipeline.slides.slide import Level, SingleLevelWarning, Slide, SlideError, open_slide
from pipeline.slides.tissue import TissueMask, detect_tissue, tissue_mask_for_slide

__all__ = [
    "Level",
    "MppError",
    "RegionPlan",
    "RegionTooLargeError",
    "SingleLevelWarning",
    "Slide",
    "SlideCache",
    "SlideError",
    "SlideIndex",
    "SlideRecord",
    "TissueMask",
    "choose_level",
    "detect_tissue",
    "footprint_level0",
    "open_slide",
    "plan_region",
    "tissue_mask_for_slide",
]
