"""``gapless tiles``: a contact sheet of tiles exactly as the pipeline makes them at a target mpp."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tiles",
        help="contact sheet of a slide's tiles at a target mpp, made by the pipeline's crop-and-resize",
        description="Draw K tiles of SLIDE at target mpp M (tissue locations, deterministic in --seed) through the "
        "DALI evaluation pipeline (crop-and-resize, no augmentation) and write them as one PNG; --json records "
        "each tile's level, location (level-0 px) and read size.",
    )
    p.add_argument("slide", type=Path, help="whole-slide image (TIFF/SVS, or any format OpenSlide reads)")
    p.add_argument("--mpp", type=float, required=True, help="target microns per pixel of the tiles")
    p.add_argument("--n", type=int, default=16, help="number of tiles (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tile-px", type=int, default=224, help="side of each tile in pixels (at least 16)")
    p.add_argument("--slide-mpp", type=float, default=None, help="override the slide's level-0 mpp")
    p.add_argument("--tissue-threshold", type=float, default=0.5,
                   help="least tissue fraction of a tile's footprint, in [0, 1] (default 0.5)")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="PNG contact sheet to write")
    p.add_argument("--json", type=Path, default=None, help="also write the tiles' metadata here")
    p.set_defaults(func=run_tiles)


def run_tiles(args: argparse.Namespace) -> int:
    from gapless.errors import InputError

    if args.mpp <= 0:
        raise InputError(f"--mpp: must be positive, got {args.mpp}")
    if args.n < 1:
        raise InputError(f"--n: must be at least 1, got {args.n}")
    if args.tile_px < 16:
        raise InputError(f"--tile-px: must be at least 16, got {args.tile_px}")
    if not 0.0 <= args.tissue_threshold <= 1.0:
        raise InputError(f"--tissue-threshold: must be in [0, 1], got {args.tissue_threshold}")
    if args.out.suffix.lower() != ".png":
        raise InputError(f"{args.out}: the contact sheet is written as PNG; give a .png path")
    from gapless.io import output_file, write_bytes, write_json

    for path in (args.out, args.json):  # before any tile is read, not after
        if path is not None:
            output_file(path)

    import cv2

    from gapless.console import console
    from gapless.pipeline.tiles import contact_sheet, slide_tiles

    tiles, records = slide_tiles(args.slide, args.mpp, args.n, args.seed, tile_px=args.tile_px,
                                 tissue_threshold=args.tissue_threshold, slide_mpp=args.slide_mpp)  # fmt: skip
    captions = [f"L{r['level']} {r['read_size']}px" if "level" in r else "skipped" for r in records]
    sheet = contact_sheet(tiles, captions)
    encoded, png = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    if not encoded:
        raise InputError(f"{args.out}: cannot encode the contact sheet as PNG")
    write_bytes(png.tobytes(), args.out)
    skipped = sum(r["skipped"] for r in records)
    if args.json:
        write_json(
            {
                "slide": str(args.slide),
                "target_mpp": args.mpp,
                "seed": args.seed,
                "tile_px": args.tile_px,
                "tiles": records,
            },
            args.json,
        )
    console.print(f"{args.out}: {len(records)} tiles at {args.mpp:g} mpp ({skipped} skipped: no readable tissue)")
    return 0
