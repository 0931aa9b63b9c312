"""Re-indexing never loses data and never keeps stale values; bad labels and a damaged index are one-line errors.

Changed settings (--mpp, a labels mpp, --mask-mpp) re-read the slides they shape; a rerun without --labels keeps the
labels, a rerun on a subset keeps the rest; --out never overwrites a file that is not an index; a damaged index is
named with the way out, and rebuilding over it works.
"""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from gapless.cli import main
from gapless.errors import InputError
from gapless.pipeline.slides import SlideIndex
from gapless.pipeline.slides.indexer import build_index
from gapless.pipeline.slides.inputs import read_labels


@pytest.fixture
def data(synthetic_slides, tmp_path):
    """Three slides in a folder of their own, their labels, and an index of them."""
    folder = tmp_path / "slides"
    folder.mkdir()
    for p in synthetic_slides.paths[:3]:
        shutil.copy(p, folder)
    labels = tmp_path / "labels.csv"
    labels.write_text(synthetic_slides.labels_csv.read_text())
    out = tmp_path / "index.h5"
    build_index([folder], out, labels, workers=1)
    return folder, labels, out


def _mpps(out) -> dict[str, float]:
    return {r.path.rsplit("/", 1)[-1]: r.mpp for r in SlideIndex.load(out).records}


def test_changed_settings_re_read_the_slides_they_shape(data) -> None:
    folder, labels, out = data
    again = build_index([folder], out, labels, mpp=0.5)
    assert (again.indexed, again.reasons) == (3, {"changed mpp": 3})
    assert set(_mpps(out).values()) == {0.5}
    assert build_index([folder], out, labels, mpp=0.5).indexed == 0
    # the labels file's mpp column shapes one slide: only it is read again
    text = labels.read_text().splitlines()
    labels.write_text("\n".join([text[0] + ",mpp", text[1] + ",0.3"] + [t + "," for t in text[2:4]]) + "\n")
    third = build_index([folder], out, labels, mpp=0.5)
    assert (third.indexed, third.reasons) == (1, {"changed mpp": 1})
    assert sorted(_mpps(out).values()) == [0.3, 0.5, 0.5]
    kept = build_index([folder], out)  # neither --labels nor --mpp: the stored overrides stay, nothing is read
    assert (kept.indexed, sorted(_mpps(out).values())) == (0, [0.3, 0.5, 0.5])
    fourth = build_index([folder], out, labels, mpp=0.5, mask_mpp=16.0)
    assert fourth.reasons == {"changed mask mpp": 3}
    assert SlideIndex.load(out).records[0].tissue_mask().mask_mpp == 16.0


def test_rerun_without_labels_or_on_a_subset_keeps_what_was_there(data, synthetic_slides, capsys) -> None:
    folder, labels, out = data
    before = {r.path: (r.label, r.patient) for r in SlideIndex.load(out).records}
    assert all(label for label, _ in before.values())
    build_index([folder], out)  # no --labels: the stored labels stay
    assert {r.path: (r.label, r.patient) for r in SlideIndex.load(out).records} == before
    one = sorted(folder.iterdir())[0]
    summary = build_index([one], out)  # a subset: the other two stay, and are reported
    assert (summary.total, summary.indexed, len(summary.kept)) == (3, 0, 2)
    assert {r.path: (r.label, r.patient) for r in SlideIndex.load(out).records} == before
    assert main(["index", str(one), "--out", str(out), "--workers", "1"]) == 0
    assert "2 slide(s) of the previous index kept, not among the inputs" in " ".join(capsys.readouterr().err.split())
    pruned = build_index([one], out, prune=True)
    assert (pruned.total, len(pruned.pruned)) == (1, 2)


def test_out_never_overwrites_a_file_that_is_not_an_index(data, tmp_path, capsys) -> None:
    folder, labels, _ = data
    slide = sorted(folder.iterdir())[0]
    for victim in (labels, slide):
        content = victim.read_bytes()
        assert main(["index", str(folder), "--labels", str(labels), "--out", str(victim), "--workers", "1"]) == 2
        assert "exists and is not a gapless slide index" in capsys.readouterr().err
        assert victim.read_bytes() == content
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(InputError, match="other.h5: exists and is not a gapless slide index"):
        build_index([folder], other)
    with pytest.raises(InputError, match="is a folder"):
        build_index([folder], tmp_path)


def test_labels_rows_without_slides_and_slides_without_rows_are_reported(data, capsys) -> None:
    folder, labels, out = data
    lines = labels.read_text().splitlines()
    labels.write_text("\n".join([lines[0], lines[1], "ghost.tiff,regular,p9"]) + "\n")
    summary = build_index([folder], out, labels)
    assert summary.unmatched_rows == ["ghost.tiff"] and len(summary.unlabelled) == 2
    assert main(["index", str(folder), "--labels", str(labels), "--out", str(out), "--workers", "1"]) == 0
    printed = " ".join(capsys.readouterr().err.split())
    assert "2 slide(s) without a labels row" in printed and "1 labels row(s) name no slide found: ghost.tiff" in printed


@pytest.mark.parametrize(
    "content, message",
    [
        ("slide,label\na.tiff,regular\na.tiff,atypia\n", "lines 2 and 3 give a.tiff different values"),
        ("slide,label,mpp\na.tiff,regular,0.25um\n", "line 2: mpp '0.25um' of a.tiff is not a number"),
        (b"slide,label\nb\xe9.tiff,regular\n", "not UTF-8 text"),
        ("name,class\na.tiff,regular\n", "missing column\\(s\\) slide, label"),
    ],
)
def test_bad_labels_files_are_one_line_errors(tmp_path, capsys, content, message) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(InputError, match=message):
        read_labels(labels)
    assert main(["index", str(tmp_path), "--labels", str(labels), "--out", str(tmp_path / "i.h5")]) == 2
    err = capsys.readouterr().err
    assert "labels.csv" in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2
    assert read_labels(_write(tmp_path / "dup.csv", "slide,label\na.tiff,x\na.tiff,x\n")) == {
        "a.tiff": {"slide": "a.tiff", "label": "x"}
    }  # an identical repeat is no conflict


def _write(path, text):
    path.write_text(text)
    return path


def test_a_name_and_a_stem_row_for_one_slide_must_agree(data, tmp_path) -> None:
    folder, _, out = data
    name = sorted(folder.iterdir())[0].name
    labels = _write(tmp_path / "l.csv", f"slide,label\n{name},regular\n{name.rsplit('.', 1)[0]},atypia\n")
    with pytest.raises(InputError, match="both name this slide, with different values"):
        build_index([folder], out, labels)


def test_a_damaged_index_is_named_with_the_way_out_and_rebuilding_over_it_works(data) -> None:
    folder, labels, out = data
    before = SlideIndex.load(out)
    masks_before = [r.tissue_mask().mask.copy() for r in before.records]
    before.close()
    with h5py.File(out, "r") as f:
        chunk = f["masks"].id.get_chunk_info(0).byte_offset
    raw = bytearray(out.read_bytes())
    raw[chunk + 40] ^= 0xFF
    out.write_bytes(bytes(raw))
    index = SlideIndex.load(out)  # the columns are intact
    with pytest.raises(InputError, match="index.h5: damaged slide index \\(the tissue mask of .* cannot be read.*"
                                         "rebuild it: gapless index SLIDES --out"):  # fmt: skip
        index.records[0].tissue_mask()
    index.close()
    summary = build_index([folder], out, labels)  # rebuild over it: only the damaged records are read again
    assert summary.reasons == {"damaged record": 3} and "damaged: read again" in summary.previous_problem
    rebuilt = SlideIndex.load(out)
    assert [r.tissue_mask().mask.sum() for r in rebuilt.records] == [m.sum() for m in masks_before]
    rebuilt.close()

    with h5py.File(out, "a") as f:
        del f["level_mpp"]
    assert main(["index", str(folder), "--out", str(out)]) == 0  # rebuilt: every slide read again
    assert len(SlideIndex.load(out).records) == 3
    with h5py.File(out, "a") as f:
        del f["level_mpp"]
    with pytest.raises(InputError, match="damaged slide index \\(dataset\\(s\\) level_mpp missing\\); rebuild it"):
        SlideIndex.load(out)


def test_an_index_replaced_under_a_running_job_is_not_misread(data, tmp_path) -> None:
    """A process keeps reading the index file it loaded, masks included, when a rebuild renames a new index over
    it; a worker given the loaded index (pickled: its path) is told in one line that the file changed, instead of
    reading another file's masks at this one's offsets."""
    import os
    import pickle

    from gapless.errors import RunError

    folder, labels, out = data
    reference = SlideIndex.load(out)
    expected = [r.tissue_mask().mask.copy() for r in reference.records]
    reference.close()
    index = SlideIndex.load(out)  # what a running job holds: no mask read yet
    sent = pickle.dumps(index)
    build_index([folder], tmp_path / "new.h5", labels, mask_mpp=16.0)  # another mask resolution, other offsets
    os.replace(tmp_path / "new.h5", out)
    for record, mask in zip(index.records, expected):
        np.testing.assert_array_equal(record.tissue_mask().mask, mask)
    with pytest.raises(RunError, match="index.h5: the slide index changed while this run was using it"):
        pickle.loads(sent)
    index.close()
    assert pickle.loads(pickle.dumps(SlideIndex.load(out))).records[0].tissue_mask().mask_mpp == 16.0
