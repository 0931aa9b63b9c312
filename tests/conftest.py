"""Shared test options: GPU tests skip without CUDA; slow tests run only with --slow."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread: the models in the tests are tiny, and on a busy 2-core CPU spinning threads run
    far slower than one. Opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def dev_full() -> str:
    """``/dev/full``, on which every write fails for want of space (ENOSPC); the test skips where it is missing."""
    if not os.access("/dev/full", os.W_OK):
        pytest.skip("needs /dev/full (a device on which every write fails for want of space)")
    return "/dev/full"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="also run tests marked slow")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_cuda = _cuda_available()
    run_slow = config.getoption("--slow")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs CUDA; this machine has none"))
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow; run with --slow"))


# --- synthetic slides shared by every subsystem's tests -------------------------------------------------------
from dataclasses import dataclass as _dataclass  # noqa: E402
from pathlib import Path as _Path  # noqa: E402


@_dataclass(frozen=True)
class SyntheticSlides:
    """Four small slides (1.0 x 0.8 mm at 0.25 mpp; levels 0.25/1/4 mpp) of three classes, labels and an index."""

    dir: _Path
    paths: list[_Path]
    labels_csv: _Path
    labels: dict[str, str]  # file name -> label
    index: _Path


@_dataclass(frozen=True)
class RulerSlide:
    """A 1 x 1 mm slide of vertical stripes: dark for the first half of every ``period_um``, light after."""

    path: _Path
    period_um: float
    base_mpp: float


@pytest.fixture(scope="session")
def synthetic_slides(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSlides:
    from gapless.pipeline.slides.indexer import build_index
    from gapless.pipeline.synth.writer import make_dataset

    root = tmp_path_factory.mktemp("synthetic_slides")
    result = make_dataset(root, slides=4, size_mm=(1.0, 0.8), seed=0, slides_per_patient=1)
    index = root / "index.h5"
    build_index([root], index, result.labels_csv, workers=1)
    return SyntheticSlides(root, result.paths, result.labels_csv, result.labels, index)


@pytest.fixture(scope="session")
def ruler_slide(tmp_path_factory: pytest.TempPathFactory) -> RulerSlide:
    from gapless.pipeline.synth.writer import write_ruler

    path = tmp_path_factory.mktemp("ruler") / "ruler.tiff"
    write_ruler(path, period_um=20.0, size_mm=(1.0, 1.0), base_mpp=0.25)
    return RulerSlide(path, 20.0, 0.25)
