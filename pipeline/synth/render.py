"""Drawing synthetic H&E tissue with structures of physical size, row band by row band.

A scene is planned in microns: tissue islands, glands (lumen + epithelial ring), fat (adipocyte membranes),
stroma and nuclei. Large structures are rasterised once on a coarse grid (8 level-0 pixels per cell) and
upsampled per band; nuclei are stamped at full resolution from a few precomputed templates; stroma gets a fine
fibrous texture (or texture from real H&E pixels). Stain amounts become colours by Beer-Lambert optical density
with haematoxylin and eosin vectors, so colours mix like real stains.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from gapless.pipeline.synth.scene import Scene, build_scene

COARSE = 8  # level-0 pixels per coarse-grid cell
OD_H = np.array([0.65, 0.70, 0.29], np.float32) * 1.9  # haematoxylin: purple-blue
OD_E = np.array([0.15, 1.0, 0.45], np.float32) * 0.9  # eosin: pink
OD_GLASS = np.array([0.07, 0.07, 0.05], np.float32)


@dataclass(frozen=True)
class SlideSpec:
    """One synthetic slide: physical size, resolution, class and seed (``label`` "ruler" draws stripes)."""

    width_um: float
    height_um: float
    base_mpp: float
    label: str
    seed: int
    ruler_period_um: float = 0.0


class Renderer:
    """Renders level-0 pixel rows of one slide; deterministic given the spec."""

    def __init__(self, spec: SlideSpec, width: int, height: int, texture: np.ndarray | None = None) -> None:
        self.spec, self.width, self.height = spec, width, height
        rng = np.random.default_rng(spec.seed)
        self.mpp = spec.base_mpp
        if spec.label != "ruler":
            self.scene: Scene | None = build_scene(spec, width, height, COARSE, rng)
            self.templates = self.scene.templates
        else:
            self.scene = None
        self.texture = texture if texture is not None else fibre_texture(rng, 512, self.mpp)
        self.texture2 = np.rot90(fibre_texture(rng, 384, self.mpp)).copy()

    def rows(self, y0: int, y1: int) -> np.ndarray:
        """Level-0 pixels of rows [y0, y1) as (y1 - y0, width, 3) uint8."""
        if self.scene is None:
            return self._ruler_rows(y0, y1)
        stain_e, stain_h, tissue, stroma = (self._upsample(m, y0, y1) for m in self.scene.coarse_maps)
        texture = self._texture(y0, y1)
        stain_h += 0.03 * tissue * texture
        np.multiply(texture, stroma, out=texture)
        stain_e += 0.3 * np.multiply(stain_e, texture, out=texture)  # fibres modulate eosin in stroma only
        self._stamp_nuclei(stain_h, y0, y1)
        return self._to_rgb(stain_h, stain_e, tissue)

    def _ruler_rows(self, y0: int, y1: int) -> np.ndarray:
        x_um = (np.arange(self.width) + 0.5) * self.mpp
        dark = ((x_um % self.spec.ruler_period_um) < self.spec.ruler_period_um / 2).astype(np.float32)
        ones = np.ones((1, self.width), np.float32)
        line = self._to_rgb((0.05 + 0.8 * dark)[None], 0.5 * ones, ones)  # both halves stained: all tissue
        return np.broadcast_to(line, (y1 - y0, self.width, 3)).copy()

    @staticmethod
    def _to_rgb(stain_h: np.ndarray, stain_e: np.ndarray, tissue: np.ndarray) -> np.ndarray:
        """Beer-Lambert: intensity = 255 exp(-optical density), channel by channel with OpenCV (fast)."""
        channels = []
        for c in range(3):
            neg_od = cv2.addWeighted(stain_h, -float(OD_H[c]), stain_e, -float(OD_E[c]), -float(OD_GLASS[c]))
            neg_od = cv2.scaleAdd(tissue, float(OD_GLASS[c]), neg_od)  # glass tint only off tissue
            channels.append(cv2.convertScaleAbs(cv2.exp(np.minimum(neg_od, 0.0, out=neg_od)), alpha=255.0))
        return cv2.merge(channels)

    def _upsample(self, coarse: np.ndarray, y0: int, y1: int) -> np.ndarray:
        """Bilinear upsampling of a coarse map (padded by one cell on each side) to rows [y0, y1)."""
        r0, r1 = y0 // COARSE, -(-y1 // COARSE) + 2
        crop = coarse[r0:r1]
        up = cv2.resize(crop, (crop.shape[1] * COARSE, crop.shape[0] * COARSE), interpolation=cv2.INTER_LINEAR)
        off = y0 - r0 * COARSE + COARSE
        return up[off : off + (y1 - y0), COARSE : COARSE + self.width]

    def _texture(self, y0: int, y1: int) -> np.ndarray:
        # Two periodic textures of incommensurate periods, so no repeat shows at low magnification.
        out = np.empty((y1 - y0, self.width), np.float32)
        for tex, weight in ((self.texture, 0.7), (self.texture2, 0.5)):
            rows = np.arange(y0, y1) % tex.shape[0]
            reps = -(-self.width // tex.shape[1])
            band = np.tile(tex[rows], (1, reps))[:, : self.width]
            out = band * weight if tex is self.texture else out + band * weight
        return out

    def _stamp_nuclei(self, stain_h: np.ndarray, y0: int, y1: int) -> None:
        scene = self.scene
        assert scene is not None
        reach = max(t.radius for t in self.templates)
        lo, hi = np.searchsorted(scene.nuclei_y, [y0 - reach, y1 + reach])
        ys, xs, kinds = scene.nuclei_y[lo:hi], scene.nuclei_x[lo:hi], scene.nuclei_kind[lo:hi]
        for k in np.unique(kinds):
            tpl = self.templates[k]
            sel = kinds == k
            rows = ys[sel, None] + tpl.dy[None, :] - y0
            cols = xs[sel, None] + tpl.dx[None, :]
            ok = (rows >= 0) & (rows < y1 - y0) & (cols >= 0) & (cols < self.width)
            values = np.broadcast_to(tpl.value[None, :], rows.shape)[ok]
            r, c = rows[ok], cols[ok]
            stain_h[r, c] = np.maximum(stain_h[r, c], values)


def fibre_texture(rng: np.random.Generator, size: int, mpp: float) -> np.ndarray:
    """A periodic, zero-mean, unit-variance texture of stroma fibres (~1.5 um thick, ~12 um long)."""
    noise = rng.standard_normal((size, size))
    ky, kx = np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij")
    angle = rng.uniform(0, np.pi)
    ku = kx * np.cos(angle) + ky * np.sin(angle)
    kv = -kx * np.sin(angle) + ky * np.cos(angle)
    su, sv = 6.0 / mpp, 1.2 / mpp  # sigmas in pixels along and across the fibres
    gain = np.exp(-2 * np.pi**2 * ((su * ku) ** 2 + (sv * kv) ** 2))
    tex = np.real(np.fft.ifft2(np.fft.fft2(noise) * gain))
    return np.clip((tex - tex.mean()) / (tex.std() + 1e-8), -2.5, 2.5).astype(np.float32)


def he_texture(tile_rgb: np.ndarray, mpp: float, tile_mpp: float = 0.5) -> np.ndarray:
    """A periodic texture from real H&E pixels: the tile's optical density, mirrored to tile seamlessly."""
    od = -np.log((tile_rgb.astype(np.float32) + 1.0) / 256.0).sum(axis=2)
    scale = tile_mpp / mpp
    od = cv2.resize(od, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    mirrored = np.concatenate([od, od[:, ::-1]], axis=1)
    tex = np.concatenate([mirrored, mirrored[::-1]], axis=0)  # periodic: tiles without seams
    return np.clip((tex - tex.mean()) / (tex.std() + 1e-8), -2.5, 2.5).astype(np.float32)


__all__ = ["Renderer", "SlideSpec", "fibre_texture", "he_texture"]
