"""``gapless tiles``: contact sheets made by the pipeline's own crop-and-resize, with the read recorded."""

from __future__ import annotations

import json

import cv2
import numpy as np

from gapless.cli import main
from gapless.pipeline.tiles import contact_sheet, slide_tiles


def test_tiles_command_writes_sheet_and_metadata(synthetic_slides, tmp_path) -> None:
    slide = synthetic_slides.paths[0]
    out, meta = tmp_path / "sheet.png", tmp_path / "meta.json"
    assert main(["tiles", str(slide), "--mpp", "0.5", "--n", "5", "--seed", "2", "--out", str(out),
                 "--json", str(meta)]) == 0  # fmt: skip
    sheet = cv2.imread(str(out))
    assert sheet.shape == (2 * 228 + 4, 3 * 228 + 4, 3)  # 5 tiles on a 3 x 2 grid with 4 px gaps
    records = json.loads(meta.read_text())["tiles"]
    assert len(records) == 5
    for r in records:
        # 0.5 mpp from the 0.25 mpp level: 448 level pixels per 224 px tile, inside the slide.
        assert r["level"] == 0 and r["read_size"] == 448 and r["target_mpp"] == 0.5
        assert all(v >= 0 for v in r["location"])
    tiles, again = slide_tiles(slide, 0.5, 5, seed=2)
    assert again == records  # the sheet is reproducible from its seed
    assert tiles.shape == (5, 224, 224, 3) and tiles.dtype == np.uint8
    below_caption = cv2.cvtColor(sheet, cv2.COLOR_BGR2RGB)[4 + 24 : 228, 4:228]
    assert np.array_equal(below_caption, tiles[0, 24:])


def test_tiles_at_a_coarse_mpp_come_from_a_coarse_level(synthetic_slides) -> None:
    _, records = slide_tiles(synthetic_slides.paths[1], 1.5, 2, seed=0)
    assert [r["level"] for r in records] == [1, 1] and {r["read_size"] for r in records} == {336}


def test_tiles_command_rejects_bad_input(synthetic_slides, tmp_path) -> None:
    slide = str(synthetic_slides.paths[0])
    assert main(["tiles", slide, "--mpp", "-1", "--out", str(tmp_path / "a.png")]) == 2
    assert main(["tiles", slide, "--mpp", "0.5", "--out", str(tmp_path / "a.jpg")]) == 2
    assert main(["tiles", str(tmp_path / "missing.tiff"), "--mpp", "0.5", "--out", str(tmp_path / "a.png")]) == 2


def test_tiles_command_refuses_a_bad_out_before_reading_the_slide(tmp_path, capsys) -> None:
    """The outputs are checked first: with a slide that does not exist, the error names the bad output."""
    missing = str(tmp_path / "missing.tiff")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "file").write_text("")
    for out, json_out in (("folder.png", None), ("file/sheet.png", None), ("sheet.png", "file/meta.json")):
        args = ["tiles", missing, "--mpp", "0.5", "--out", str(tmp_path / out)]
        assert main(args + (["--json", str(tmp_path / json_out)] if json_out else [])) == 2
        error = capsys.readouterr().err
        assert str(tmp_path / (json_out or out).split("/")[0]) in error and "missing.tiff" not in error, error
    assert not (tmp_path / "sheet.png").exists()


def test_contact_sheet_layout() -> None:
    tiles = np.zeros((7, 10, 10, 3), np.uint8)
    assert contact_sheet(tiles, gap=2).shape == (3 * 12 + 2, 3 * 12 + 2, 3)
