"""Configuration schema of the data pipeline: sampling, tile geometry, multi-crop augmentation and loading."""

from __future__ import annotations

from dataclasses import dataclass, field

from gapless.pipeline.sampling.config import SamplingConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class AugmentConfig:
    """DINOv2 multi-crop augmentation; defaults are DINOv2's (per-crop probabilities included)."""

    global_crops: int = 2
    global_size: int = 224
    global_scale: tuple[float, float] = (0.32, 1.0)
    local_crops: int = 8
    local_size: int = 96
    local_scale: tuple[float, float] = (0.05, 0.32)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p_global1: float = 1.0  # first global crop: always blurred
    blur_p_global2: float = 0.1  # second global crop: rarely blurred, sometimes solarized
    blur_p_local: float = 0.5
    solarize_p_global2: float = 0.2
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        for name, least in (("global_crops", 1), ("local_crops", 0), ("global_size", 1), ("local_size", 1)):
            if getattr(self, name) < least:
                raise ValueError(f"{name}: must be >= {least}, got {getattr(self, name)}")
        for name in ("global_scale", "local_scale"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high <= 1.0:
                raise ValueError(f"{name}: need 0 < low <= high <= 1 (shares of the tile's area), got {(low, high)}")
        for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p_global1", "blur_p_global2", "blur_p_local",
                     "solarize_p_global2"):  # fmt: skip
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: a probability must be in [0, 1], got {getattr(self, name)}")
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: a jitter strength must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue: must be in [0, 0.5] (in turns of the colour wheel), got {self.hue}")
        if min(self.std) <= 0:
            raise ValueError(f"std: every channel's std must be > 0, got {self.std}")


@dataclass
class DataConfig:
    """Where tiles come from and how they are loaded."""

    index: str = ""  # slide index (.h5) written by `gapless index`
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    tile_px: int = 224  # base tile made by crop-and-resize, before multi-crop
    tissue_threshold: float = 0.5  # minimum tissue fraction of a tile's footprint at its sampled mpp
    batch_size: int = 32  # per rank
    iterations_per_epoch: int = 1000  # an epoch is a fixed number of iterations, not a pass over the slides
    seed: int = 0
    loader: str = "auto"  # auto | dali | baseline | synthetic (random in-memory tensors, no I/O)
    device: str = "auto"  # auto | cpu | gpu (where crop-resize and augmentation run)
    read_device: str = "auto"  # auto (= cpu) | cpu | cuda (where the slides' JPEG tiles are decoded)
    # with read_device=cuda: batched (one nvImageCodec call per batch) | cuslide2 (cuCIM's nvImageCodec plugin,
    # batched per slide) | dali (DALI's decoder, tiles read in the workers) | cucim (region by region)
    gpu_decode: str = "batched"
    workers: int = 2  # worker processes (DALI parallel external source, or DataLoader workers)
    prefetch: int = 2  # batches queued ahead per worker
    handle_cache: int = 32  # open slide handles kept per process (bounded LRU)
    tiles_per_slide: int = 1  # consecutive samples of a rank whose first attempt shares a slide (1: independent)
    max_read_retries: int = 8  # a failed read retries at another location this many times, then is skipped

    def __post_init__(self) -> None:
        for name, allowed in (
            ("loader", ("auto", "dali", "baseline", "synthetic")),
            ("device", ("auto", "cpu", "gpu")),
            ("read_device", ("auto", "cpu", "cuda")),
            ("gpu_decode", ("batched", "cuslide2", "dali", "cucim")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: '{getattr(self, name)}' is not one of {', '.join(allowed)}")
        if self.batch_size < 1 or self.iterations_per_epoch < 1 or self.tile_px < 16 or self.tiles_per_slide < 1:
            raise ValueError("batch_size, iterations_per_epoch and tiles_per_slide must be >= 1 and tile_px >= 16")
        if not 0.0 <= self.tissue_threshold <= 1.0:
            raise ValueError(f"tissue_threshold: must be in [0, 1], got {self.tissue_threshold}")
        # Settings under which every read fails: refused here rather than found out as a run of blank tiles.
        if self.max_read_retries < 0:
            raise ValueError(f"max_read_retries: must be >= 0 (0 reads each tile once), got {self.max_read_retries}")
        if self.handle_cache < 1:
            raise ValueError(
                f"handle_cache: must be >= 1 (an open slide is needed to read it), got {self.handle_cache}"
            )
