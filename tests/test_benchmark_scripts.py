"""The benchmark scripts beside the harness: ``gpu_check.sh`` (parses; refuses clearly without CUDA),
``manyslides`` (real tile counts, a linked index), ``reads`` and ``reads --tile-check`` (run to the end, every row),
and the stage table (opens only the slides its tiles read)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gapless.devices import cuda_available

GPU_CHECK = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


def test_gpu_check_script_parses() -> None:
    assert subprocess.run(["bash", "-n", str(GPU_CHECK)]).returncode == 0


@pytest.mark.skipif(cuda_available(), reason="on a GPU machine the script runs its check instead of refusing")
def test_gpu_check_script_refuses_clearly_without_cuda(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    done = subprocess.run(["bash", str(GPU_CHECK)], env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "cannot use a CUDA device" in done.stderr


def test_many_slides_have_real_tile_counts_and_a_linked_index(synthetic_slides, tmp_path: Path) -> None:
    """manyslides: files whose tiles point into a small pool (every tile readable, the same pixels from cuCIM and
    tifffile), indexed by the real indexer, and an index of more slides than files over distinct link paths."""
    import tifffile

    from gapless.benchmarks.manyslides import link_index, write_files
    from gapless.pipeline.loader import load_slides
    from gapless.pipeline.slides import SlideIndex, open_slide
    from gapless.pipeline.slides.indexer import build_index

    paths = write_files(tmp_path / "slides", 3, synthetic_slides.paths[:2], (16384, 12288))
    with tifffile.TiffFile(paths[0]) as tif:
        assert [len(p.dataoffsets) for p in tif.pages] == [64 * 48, 16 * 12, 4 * 3]  # 256 px tiles per level
        coarse = tif.pages[2].asarray()
        assert len(set(tif.pages[0].dataoffsets)) <= 17 and paths[0].stat().st_size < 2e6  # a pool, not 3072 tiles
    with open_slide(paths[0]) as slide:
        assert slide.mpp == 0.25 and [lv.mpp for lv in slide.levels] == [0.25, 1.0, 4.0]
        assert np.array_equal(slide.read_level(2), coarse)
    index = tmp_path / "index-3.h5"
    assert build_index(paths, index, workers=1).usable == 3
    linked = link_index(index, tmp_path / "links", tmp_path / "index-7.h5", 7)
    records = list(SlideIndex.load(linked).records)
    originals = {r.path: r for r in SlideIndex.load(index).records}
    assert len({r.path for r in records}) == 7 and all(Path(r.path).is_symlink() for r in records)
    for record in records:
        original = originals[os.path.realpath(record.path)]
        assert record.levels == original.levels
        assert np.array_equal(record.tissue_mask().mask, original.tissue_mask().mask)
    slides, skipped, _ = load_slides(linked)
    assert len(slides) == 7 and skipped == 0


def test_reads_script_runs_to_the_end(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m gapless.benchmarks.reads`` (gpu_check.sh runs it) on a tiny slide: every row printed, no error."""
    from gapless.benchmarks import reads

    reads.main(["--seconds", "0.01", "--size-mm", "0.5"])
    rows = [line.split()[:2] for line in capsys.readouterr().out.splitlines()[2:]]
    backends = ["cucim/cpu", "openslide/cpu", "batched/cpu", "px/out"]
    assert rows == [[pyramid, backend] for pyramid in ("4x", "2x") for backend in backends]


def test_tile_check_script_prints_every_reader_and_the_one_host_reads_get(capsys: pytest.CaptureFixture[str]) -> None:
    """``reads --tile-check``: a row per reader and mpp, warm and cold, and the reader auto picks for a host read of
    a JPEG SVS (the strict tifffile reader)."""
    from gapless.benchmarks import reads

    reads.main(["--tile-check", "--size-mm", "0.5", "--reads", "3"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[3:]]
    names = ["cucim", "openslide", "tifffile", "auto (tifffile)"]
    assert [" ".join(row[:-8]) for row in rows] == [name for name in names for _ in range(3)]
    assert all(float(value.rstrip("%")) == float(value.rstrip("%")) for row in rows for value in row[-8:])


def test_stage_breakdown_opens_only_the_slides_its_tiles_read(synthetic_slides) -> None:
    """With an index of many slides, the stage table opens the few its tiles come from, not every slide."""
    from gapless.benchmarks.stages import _StageRun
    from gapless.pipeline.config import AugmentConfig, DataConfig

    cfg = DataConfig(index=str(synthetic_slides.index), tile_px=64, augment=AugmentConfig(local_crops=1))
    run = _StageRun(cfg, n_tiles=2, batch=2, cuda=False)
    paths = {spec.path for spec in run.specs}
    assert len(run.specs) == 2 and len(paths) < len(run.source.slides)
    assert run.source.cache.opened == len(paths) and all(path in run.source.cache for path in paths)
    run.step(0)
    assert len(run.times["read"]) == 1 and run.source.cache.opened == len(paths)
