"""The multi-scale evaluation set file (HDF5): layout, writer and reader.

Layout of ``set.h5``::

    attrs: format="gapless-eval-set", version, set_id (uuid), mpps, tile_px, classes (JSON), n_folds, seed,
           resampling (how tiles were shrunk: paper | area, see gapless.eval.sets.tiles; sets without it: area)
    tiles/<mpp>   uint8 [N, tile_px, tile_px, 3], one chunk per tile, gzip   (e.g. tiles/0.375)
    labels        int64 [N]     class index into attrs["classes"]
    slides        str   [N]     slide (or region image) each region comes from
    patients      str   [N]
    folds         int64 [N]     patient-disjoint, stratified fold of each region
    centres       float [N, 2]  region centre (x, y) in base-level pixels
    base_mpp      float [N]     mpp of the pixels the tiles were made from

Row ``i`` is the same region at every mpp. Files are written under a temporary name and renamed when complete.
:func:`is_set_file` tells a set from any other file: `gapless eval-set` replaces a set, nothing else.
"""

from __future__ import annotations

import json
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from gapless.errors import InputError
from gapless.io import atomic_output
from gapless.pipeline.sampling.magnifications import mpp_key

SET_FORMAT = "gapless-eval-set"
LEGACY_FORMATS = ("gapless-bench-set",)  # what sets written before the rename say; they read the same
SET_VERSION = 1


class SetWriter:
    """``with SetWriter(path, mpps) as writer:`` appends regions (one tile per mpp) with :meth:`add`; :meth:`finish`
    adds labels and folds. The file is written under a temporary name and renamed when the block ends without error
    (:func:`gapless.io.atomic_output`): an error leaves no file and any earlier one as it was."""

    def __init__(self, path: str | Path, mpps: list[float], tile_px: int = 224, resampling: str = "paper") -> None:
        self.path = Path(path)
        self.resampling = resampling
        self.mpps = list(mpps)
        self.tile_px = tile_px
        self.rows: list[tuple[str, str, str, float, float, float]] = []
        self._stack = ExitStack()

    def __enter__(self) -> SetWriter:
        with self._stack as stack:
            tmp = stack.enter_context(atomic_output(self.path))
            self.file = stack.enter_context(h5py.File(tmp, "w"))
            shape, chunk = (0, self.tile_px, self.tile_px, 3), (1, self.tile_px, self.tile_px, 3)
            self.tiles = [
                self.file.create_dataset(
                    f"tiles/{mpp_key(m)}",
                    shape,
                    np.uint8,
                    maxshape=(None, *shape[1:]),
                    chunks=chunk,
                    compression="gzip",
                )  # fmt: skip
                for m in self.mpps
            ]
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> bool | None:
        return self._stack.__exit__(*exc)  # closes the file, then renames it (or removes it after an error)

    def add(self, tiles: list[np.ndarray], slide: str, patient: str, label: str, centre, base_mpp: float) -> None:
        n = len(self.rows)
        for dataset, tile in zip(self.tiles, tiles):
            dataset.resize(n + 1, axis=0)
            dataset[n] = tile
        self.rows.append((slide, patient, label, float(centre[0]), float(centre[1]), float(base_mpp)))

    def finish(self, folds: np.ndarray, classes: list[str], n_folds: int, seed: int) -> None:
        """Write the labels, folds and attributes of the regions added."""
        slides, patients, label_names, cx, cy, base = zip(*self.rows)
        index = {c: i for i, c in enumerate(classes)}
        f = self.file
        f.attrs.update(
            format=SET_FORMAT,
            version=SET_VERSION,
            set_id=uuid.uuid4().hex,
            mpps=np.asarray(self.mpps, dtype=np.float64),
            tile_px=self.tile_px,
            classes=json.dumps(classes),
            n_folds=n_folds,
            seed=seed,
            resampling=self.resampling,
        )
        f["labels"] = np.array([index[c] for c in label_names], dtype=np.int64)
        f.create_dataset("slides", data=np.array(slides, dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("patients", data=np.array(patients, dtype=object), dtype=h5py.string_dtype())
        f["folds"] = np.asarray(folds, dtype=np.int64)
        f["centres"] = np.stack([cx, cy], axis=1).astype(np.float64)
        f["base_mpp"] = np.asarray(base, dtype=np.float64)


def is_set_file(path: str | Path) -> bool:
    """Whether ``path`` is an evaluation set (a file `gapless eval-set` wrote)."""
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") in (SET_FORMAT, *LEGACY_FORMATS)
    except OSError:
        return False


@dataclass
class EvalSet:
    """A loaded set's metadata; tiles stay on disk and are read in batches with :meth:`read_tiles`."""

    path: Path
    set_id: str
    mpps: list[float]
    tile_px: int
    classes: list[str]
    labels: np.ndarray
    slides: np.ndarray
    patients: np.ndarray
    folds: np.ndarray
    resampling: str = "area"

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def load(cls, path: str | Path) -> EvalSet:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: evaluation set not found")
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise InputError(f"{path}: not an HDF5 file ({exc})") from exc
        with f:
            if f.attrs.get("format") not in (SET_FORMAT, *LEGACY_FORMATS):
                raise InputError(f"{path}: not an evaluation set (make one with `gapless eval-set`)")
            for name in ("labels", "folds", "patients", "slides"):
                if name not in f:
                    raise InputError(f"{path}: the set has no '{name}' (it cannot be evaluated; rebuild it)")
            mpps = [float(m) for m in f.attrs["mpps"]]
            missing = [mpp_key(m) for m in mpps if f"tiles/{mpp_key(m)}" not in f]
            if missing:
                raise InputError(f"{path}: tiles missing for mpp {', '.join(missing)}")
            return cls(
                path=path,
                set_id=str(f.attrs["set_id"]),
                mpps=mpps,
                tile_px=int(f.attrs["tile_px"]),
                classes=json.loads(f.attrs["classes"]),
                labels=f["labels"][:],
                slides=f["slides"].asstr()[:],
                patients=f["patients"].asstr()[:],
                folds=f["folds"][:],
                resampling=str(f.attrs.get("resampling", "area")),
            )

    def read_tiles(self, mpp: float, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Tiles ``start:stop`` at ``mpp`` as uint8 [n, tile_px, tile_px, 3]."""
        with h5py.File(self.path, "r") as f:
            return f[f"tiles/{mpp_key(mpp)}"][start:stop]
