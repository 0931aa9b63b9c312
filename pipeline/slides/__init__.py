"""Slides: reading regions at any mpp (cuCIM, OpenSlide), mpp metadata, region planning, tissue detection and
the slide index. (Synthetic slides are written by :mod:`gapless.pipeline.synth`.)"""

from gapless.pipeline.slides.cache import SlideCache
from gapless.pipeline.slides.index import SlideIndex, SlideRecord
from gapless.pipeline.slides.planning import RegionPlan, choose_level, plan_region
from gapless.pipeline.slides.slide import Level, RegionOutsideError, SingleLevelWarning, Slide, open_slide
from gapless.pipeline.slides.tissue import TissueMask, detect_tissue, tissue_mask_for_slide

__all__ = [
    "Level",
    "RegionOutsideError",
    "RegionPlan",
    "SingleLevelWarning",
    "Slide",
    "SlideCache",
    "SlideIndex",
    "SlideRecord",
    "TissueMask",
    "choose_level",
    "detect_tissue",
    "open_slide",
    "plan_region",
    "tissue_mask_for_slide",
]
