"""The GPU paths: DALI GPU operators, and cuCIM decoding on the GPU feeding DALI without a host copy.

GPU tests skip without CUDA; their CPU twins (the same graph on CPU operators, the same sample indices for both
read paths) run everywhere.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gapless.pipeline.config import AugmentConfig, DataConfig
from gapless.pipeline.dali.gpu_source import BatchParams, GpuBatchReader
from gapless.pipeline.loader import build_loader, build_source
from gapless.pipeline.source import SampleCallback, Shard
from gapless.pipeline.tiles import EvalTiles

B = 4


def _cfg(index, **kw) -> DataConfig:
    base = dict(index=str(index), batch_size=B, iterations_per_epoch=2, workers=0, seed=5,
                augment=AugmentConfig(local_crops=2))  # fmt: skip
    return DataConfig(**{**base, **kw})


class _Info:
    """Stand-in for DALI's SampleInfo: the callback reads only ``idx_in_epoch``."""

    def __init__(self, idx: int) -> None:
        self.idx_in_epoch = idx


def test_gpu_reader_reads_the_samples_the_cpu_callback_reads(synthetic_slides) -> None:
    cfg = _cfg(synthetic_slides.index)
    source, _ = build_source(cfg)
    shard = Shard(rank=1, world_size=3, start=2)
    reader = GpuBatchReader(source, B, shard)
    callback = SampleCallback(source, shard, B)
    for iteration in range(3):
        expected = [shard.global_index(callback.offset + iteration * B + b) for b in range(B)]
        assert reader.sample_indices(iteration) == expected
    # The GPU path's host-side parameters are those the CPU callback delivers with the same samples.
    augmented = SampleCallback(source, shard, B, augment=cfg.augment)
    params = BatchParams(reader, cfg.augment)(1)
    assert all(np.array_equal(params[b], augmented(_Info(B + b))[5]) for b in range(B))


def test_batch_paths_deliver_the_parameters_of_sample_params_bit_for_bit(synthetic_slides) -> None:
    """The GPU reader's and the DALI-decoder path's batch parameter sources draw with one sampler each: the same
    arrays :func:`sample_params` gives sample by sample."""
    from gapless.pipeline.augparams import sample_params
    from gapless.pipeline.dali.tile_batches import TileBatchCallback

    cfg = _cfg(synthetic_slides.index)
    source, _ = build_source(cfg)
    shard = Shard(rank=1, world_size=2, start=3)
    reader = GpuBatchReader(source, B, shard)
    params = BatchParams(reader, cfg.augment)
    callback = TileBatchCallback(source, shard, B, 4 * B, augment=cfg.augment, verify=False)
    for iteration in range(3):
        want = [sample_params(cfg.augment, source.seed, g, source.tile_px) for g in reader.sample_indices(iteration)]
        for got in (params(iteration), callback(iteration)[-1][:B]):
            assert len(got) == B and all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(got, want))
    callback.close()


@pytest.mark.parametrize("decode", ["batched", "cucim"])
def test_gpu_reader_cpu_twin_delivers_what_the_cpu_callback_delivers(synthetic_slides, decode: str) -> None:
    """The GPU reader's columns, made on the host (NumPy, nvImageCodec's CPU decoder), against the CPU path."""
    cfg = _cfg(synthetic_slides.index)
    source, _ = build_source(cfg)
    shard = Shard(rank=0, world_size=2, start=1)
    reader = GpuBatchReader(source, B, shard, decode=decode, planners=0, device="cpu")
    callback = SampleCallback(source, shard, B)
    for iteration in range(2):
        columns = reader(iteration)
        assert [len(c) for c in columns] == [B] * 5
        for b in range(B):
            expected = callback(_Info(iteration * B + b))
            for got, want in zip((column[b] for column in columns), expected):
                assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)


@pytest.mark.gpu
def test_gpu_graph_with_host_reads_keeps_the_contract(synthetic_slides) -> None:
    import torch

    cfg = _cfg(synthetic_slides.index, device="gpu", read_device="cpu")
    with build_loader(cfg) as loader:
        for batch in loader:
            assert batch["global_crops"].is_cuda and batch["global_crops"].shape == (2 * B, 3, 224, 224)
            assert batch["local_crops"].shape == (2 * B, 3, 96, 96)
            assert batch["global_crops"].dtype == torch.float32 and batch["mpp"].is_cuda
        assert loader.stats()["reads"] == 2 * B


@pytest.mark.gpu
def test_gpu_reads_make_the_tiles_the_cpu_path_makes(synthetic_slides) -> None:
    cfg = _cfg(synthetic_slides.index, device="gpu", read_device="cuda")
    with (
        build_loader(cfg) as gpu_loader,
        build_loader(dataclasses.replace(cfg, device="cpu", read_device="cpu")) as cpu,
    ):
        a, b = gpu_loader.next_batch(), cpu.next_batch()
        assert np.array_equal(a["mpp"].cpu().numpy(), b["mpp"].cpu().numpy())
        assert np.array_equal(a["level"].cpu().numpy(), b["level"].cpu().numpy())
        # Same parameters, GPU vs CPU operators (and nvJPEG vs libjpeg-turbo): the same views, a few grey levels off.
        for key in ("global_crops", "local_crops"):
            err = (a[key].cpu().numpy() - b[key].cpu().numpy()) * 255.0 * np.array(cfg.augment.std)[:, None, None]
            assert 10 * np.log10(255.0**2 / max(float(np.mean(err**2)), 1e-9)) > 30.0
    source, _ = build_source(cfg)
    gpu_tiles, _ = EvalTiles(cfg, source, device="gpu", read_device="cuda").next_batch()
    cpu_tiles, _ = EvalTiles(cfg, source, device="cpu", read_device="cpu").next_batch()
    mse = np.mean((gpu_tiles.astype(np.float64) - cpu_tiles) ** 2)
    # nvJPEG and libjpeg-turbo round IDCT and upsampling differently, and the GPU resize kernel is not bit-equal
    # to the CPU one: a few grey levels of RMS difference, far from the < 25 dB of a wrong region.
    assert 10 * np.log10(255.0**2 / max(mse, 1e-9)) > 30.0
