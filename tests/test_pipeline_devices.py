"""Where the DALI graphs run: every view comes out of the device the config names, whichever way the regions come
in. The graphs are only defined here (a pipeline's outputs are known before it is built), so no CUDA is needed."""

from __future__ import annotations

import pytest

from gapless.pipeline.config import AugmentConfig, DataConfig
from gapless.pipeline.dali import pipelines
from gapless.pipeline.loader import build_source
from gapless.pipeline.source import SampleCallback, Shard

B = 2


@pytest.mark.parametrize("resize_px", [0, 224], ids=["regions", "host-resized"])
@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_views_run_on_the_configured_device_with_host_reads(synthetic_slides, device: str, resize_px: int) -> None:
    aug = AugmentConfig(local_crops=2)
    source, _ = build_source(DataConfig(index=str(synthetic_slides.index), batch_size=B, workers=0))
    common = dict(batch_size=B, num_threads=1, device_id=None)
    train = pipelines.RegionReads(SampleCallback(source, Shard(), B, aug, resize_px), False, False, 1)
    views = pipelines.train_pipeline(train, device, 224, aug, **common)._graph_out[: aug.global_crops + aug.local_crops]
    evaluation = pipelines.RegionReads(SampleCallback(source, Shard(), B, None, resize_px), False, False, 1)
    tiles = pipelines.eval_pipeline(evaluation, device, 224, aug, True, **common)._graph_out[0]
    assert train.resized == evaluation.resized == bool(resize_px)
    assert [view.device for view in (*views, tiles)] == [device] * (len(views) + 1)
