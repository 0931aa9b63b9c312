"""``gapless synth``: synthetic pyramidal slides of three classes, and their ``labels.csv``."""

from __future__ import annotations

import argparse
import os


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth",
        help="write synthetic pyramidal H&E-like slides and labels.csv",
        description="Write tiled, JPEG-compressed pyramidal slides with correct mpp metadata, three classes that "
        "differ at different scales (regular, atypia: nuclei only; lobular: architecture only), and labels.csv.",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--preset", choices=("tiny", "small", "demo"), help="size and count preset (flags override)")
    p.add_argument("--slides", type=int, help="number of slides (default 6)")
    p.add_argument("--size-mm", type=float, nargs=2, metavar=("W", "H"), help="slide size in mm (default 1 0.8)")
    p.add_argument("--base-mpp", type=float, default=0.25, help="level-0 microns per pixel")
    p.add_argument(
        "--format",
        default="tiff",
        metavar="FORMAT",
        help="tiff (generic tiled TIFF, default), svs (Aperio-like), ome-tiff (pyramid in SubIFDs), philips (Philips "
        "TIFF) or dicom (a folder of DICOM WSI instances per slide); NDPI and MRXS cannot be written offline",
    )
    p.add_argument("--level-step", type=int, choices=(2, 4), default=4, help="downsample between levels")
    p.add_argument("--slides-per-patient", type=int, default=2, help="slides that share a patient id (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ruler", type=float, metavar="PERIOD_UM", help="also write ruler.tiff: stripes of this period")
    p.add_argument("--he-texture", action="store_true", help="texture stroma with real H&E pixels (wsidicom-data)")
    p.set_defaults(func=_synth)


def _synth(args: argparse.Namespace) -> int:
    from gapless.console import console
    from gapless.errors import InputError
    from gapless.pipeline.synth.formats import check_format
    from gapless.pipeline.synth.writer import PRESETS, make_dataset, write_ruler

    try:
        check_format(args.format)
    except ValueError as exc:
        raise InputError(f"synth: {exc}") from None
    width, height, slides = PRESETS[args.preset or "tiny"]
    size = tuple(args.size_mm) if args.size_mm else (width, height)
    slides = args.slides if args.slides is not None else slides
    if slides < 0 or min(size) <= 0 or not 0.05 <= args.base_mpp <= 10 or args.slides_per_patient < 1:
        raise InputError(
            "synth: need --slides >= 0, positive --size-mm, --base-mpp within 0.05-10 and --slides-per-patient >= 1"
        )
    with console.status(f"writing {slides} slides of {size[0]:g} x {size[1]:g} mm to {args.out}"):
        result = make_dataset(
            args.out, slides, size, args.base_mpp, args.format, args.seed, args.level_step, args.he_texture,
            slides_per_patient=args.slides_per_patient,
        )  # fmt: skip
        if args.ruler:
            write_ruler(os.path.join(args.out, "ruler.tiff"), args.ruler, size, args.base_mpp)
    console.print(f"wrote {len(result.paths)} slides and {result.labels_csv}")
    return 0
