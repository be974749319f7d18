"""Procedural phantom of the sacroiliac joints (SIJ): raw "MR intensities" of axial or coronal slices with lesion masks.

Each phantom patient has one anatomy (sacrum, both ilia, the joint spaces between them, fat, muscle, skin, bowel),
one pose and one set of lesions in 3-D; its slices sample that anatomy at positions z in [-1, 1] across the joint,
so neighbouring slices differ a little and a lesion shows on the slices that its extent in z reaches.

Contrast is STIR-like: fat is suppressed (dark), water is bright. AS patients get the signs the ASAS definition of
active sacroiliitis and its structural lesions name, each painted into the slice's lesion mask:
- periarticular bone-marrow oedema (bright) in the subchondral bone beside the joint, always present;
- erosions (bright, fluid-like notches of the joint margin);
- sclerosis (dark subchondral band, iliac side);
- occasionally partial ankylosis (the joint space bridged by marrow).
The label is per patient (AS vs healthy, as in the paper) and the mask is per slice: an AS patient's slice that no
lesion reaches keeps the AS label with an empty mask, as a real patient's slice outside the inflamed region would.
Healthy patients get none of these, never a mask pixel; both classes get the same mimics (bright vessels beside the
joint, fat islands in the marrow, marrow heterogeneity and, with `difficulty`, faint physiological marrow signal),
so that brightness near a joint alone does not give the label away.

Acquisition: smoothing point-spread function, random gain, smooth multiplicative bias field, Rician noise, and on
some slices a zero-padded band, burned-in text and a ruler outside the body, so that preprocessing has real work.

Deterministic: a patient is a function of (seed, config, patient index) only, through numpy SeedSequence, so
patients do not depend on the order in which they are generated. Lesions draw from their own stream: a patient
generated with and without lesions differs only where lesions are painted.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Sequence

import cv2
import numpy as np

from asemble_jax.data.examples import PLANES

_SUBPIXEL_BITS = 4
_BURNED_IN_TEXT = ("SE 4200/70", "STIR", "TI 150", "3.3 mm", "FOV 38", "L", "R", "IM 12", "256x256", "NEX 2")


@dataclasses.dataclass(frozen=True)
class Contrast:
    """Tissue signal on a 0..1 scale where free water (cerebrospinal fluid) is 1."""

    fat: float = 0.10
    muscle: float = 0.33
    marrow: float = 0.24
    cortex: float = 0.04
    cartilage: float = 0.50
    fluid: float = 1.0
    skin: float = 0.45
    disc: float = 0.62
    oedema: float = 0.40
    """Signal that oedema adds to marrow at difficulty 0; `difficulty` scales it down."""


STIR = Contrast()
# A different scanner and protocol: weaker fat suppression, brighter marrow, so oedema stands out less.
SHIFTED_CONTRAST = Contrast(fat=0.26, muscle=0.28, marrow=0.33, cortex=0.06, cartilage=0.42, skin=0.38,
                            disc=0.55, oedema=0.34)


@dataclasses.dataclass(frozen=True)
class PhantomConfig:
    """Everything that shapes a phantom except the seed and the patient index."""

    plane: str = "coronal"
    size: int = 320
    slices_per_patient: int = 10
    difficulty: float = 0.5
    """0..1: lower lesion conspicuity (contrast, size) and more and stronger mimics as it grows."""
    contrast: Contrast = STIR
    noise: float = 0.035
    """Rician noise sigma relative to the fluid signal."""
    fov: float = 1.0
    """Field of view relative to the default one; above 1 the anatomy appears smaller."""
    bias: float = 0.25
    """Amplitude of the log bias field."""
    artifact_probability: float = 0.5

    def __post_init__(self):
        if self.plane not in PLANES:
            raise ValueError(f"plane must be one of {PLANES}, got {self.plane!r}")
        if not 0.0 <= self.difficulty <= 1.0:
            raise ValueError(f"difficulty must lie in [0, 1], got {self.difficulty}")
        if self.size < 64:
            raise ValueError(f"size must be at least 64 pixels, got {self.size}")
        if self.slices_per_patient < 1:
            raise ValueError(f"slices_per_patient must be positive, got {self.slices_per_patient}")
        if self.fov <= 0 or self.noise < 0 or self.bias < 0 or not 0 <= self.artifact_probability <= 1:
            raise ValueError(f"fov must be positive, noise and bias non-negative, artifact_probability in [0, 1]: "
                             f"{self}")


@dataclasses.dataclass(frozen=True)
class PhantomSlice:
    image: np.ndarray
    """(size, size) float32 raw MR intensities."""
    mask: np.ndarray
    """(size, size) uint8 {0, 1}: lesion pixels; all zero for a healthy patient."""
    bone: np.ndarray
    """(size, size) uint8 {0, 1}: ground-truth bone (sacrum, ilia, lumbar vertebra)."""
    slice_index: int


@dataclasses.dataclass(frozen=True)
class PhantomPatient:
    index: int
    has_lesions: bool
    slices: tuple[PhantomSlice, ...]


def generate_patient(seed: int, index: int, has_lesions: bool, config: PhantomConfig = PhantomConfig()
                     ) -> PhantomPatient:
    """All slices of phantom patient `index`; `has_lesions` makes it an AS patient."""
    anatomy_seq, lesion_seq, slices_seq = _patient_seed(seed, index, config).spawn(3)
    anatomy = _draw_anatomy(np.random.default_rng(anatomy_seq), config.plane)
    lesions = _draw_lesions(np.random.default_rng(lesion_seq), config.difficulty) if has_lesions else ()
    positions = np.linspace(-1.0, 1.0, config.slices_per_patient) if config.slices_per_patient > 1 else [0.0]
    slices = tuple(
        _render_slice(anatomy, lesions, float(z), k, np.random.default_rng(slice_seq), config)
        for k, (z, slice_seq) in enumerate(zip(positions, slices_seq.spawn(config.slices_per_patient))))
    return PhantomPatient(index=index, has_lesions=has_lesions, slices=slices)


def _patient_seed(seed: int, index: int, config: PhantomConfig) -> np.random.SeedSequence:
    # repr of a frozen dataclass of floats, ints and strings is stable across processes, unlike hash().
    digest = hashlib.sha256(repr(config).encode()).digest()
    return np.random.SeedSequence([seed, int.from_bytes(digest[:8], "little"), index])


# ----------------------------------------------------------------------------------------------------------------
# Anatomy. Coordinates are "anatomy units": the default field of view spans [-1, 1] in x (patient's right on the
# image left, as radiology displays it) and y (down the image: inferior on coronal, posterior on axial).


@dataclasses.dataclass(frozen=True)
class _Anatomy:
    plane: str
    angle: float
    scale: float
    shift: tuple[float, float]
    body_axes: tuple[float, float]
    body_centre_y: float
    skin: float
    fat: float
    bone_top: float
    bone_bottom: float
    width_top: tuple[float, float]
    width_bottom: tuple[float, float]
    bulge: tuple[float, float]
    joint_gap: float
    wing: np.ndarray
    """(2, 5, 2) jitter of the lateral outline of each ilium."""
    fascia: np.ndarray
    """(2, 3) fascial planes on each side: offset, position, curvature."""
    marrow_scale: float


def _draw_anatomy(rng: np.random.Generator, plane: str) -> _Anatomy:
    coronal = plane == "coronal"
    top, bottom = (-0.38, 0.32) if coronal else (0.0, 0.42)
    width_top = rng.uniform(0.24, 0.30) if coronal else rng.uniform(0.27, 0.33)
    width_bottom = rng.uniform(0.08, 0.12) if coronal else rng.uniform(0.15, 0.19)
    asymmetry = rng.normal(0.0, 0.012, size=2)
    return _Anatomy(
        plane=plane,
        angle=float(rng.normal(0.0, np.deg2rad(5.0))),
        scale=float(rng.uniform(0.88, 1.08)),
        shift=tuple(rng.normal(0.0, 0.03, size=2)),
        body_axes=(float(rng.uniform(0.86, 0.96)),
                   float(rng.uniform(0.76, 0.86) if coronal else rng.uniform(0.52, 0.62))),
        body_centre_y=float(rng.uniform(0.08, 0.14) if coronal else rng.uniform(0.02, 0.1)),
        skin=float(rng.uniform(0.010, 0.016)),
        fat=float(rng.uniform(0.04, 0.12)),
        bone_top=top + float(rng.normal(0.0, 0.02)),
        bone_bottom=bottom + float(rng.normal(0.0, 0.02)),
        width_top=(width_top + asymmetry[0], width_top - asymmetry[0]),
        width_bottom=(width_bottom + asymmetry[1], width_bottom - asymmetry[1]),
        bulge=tuple(rng.uniform(0.0, 0.045, size=2)),
        joint_gap=float(rng.uniform(0.008, 0.013)),
        wing=rng.normal(0.0, 0.025, size=(2, 5, 2)),
        fascia=np.column_stack([rng.uniform(0.05, 0.2, 2), rng.uniform(-0.4, 0.4, 2), rng.uniform(-0.1, 0.1, 2)]),
        marrow_scale=float(rng.uniform(0.9, 1.1)),
    )


@dataclasses.dataclass(frozen=True)
class _Joint:
    side: int
    """-1 on the image left, +1 on the image right."""
    centre: np.ndarray
    """(n, 2) centre line of the joint space, from its top (coronal) or anterior (axial) end."""
    normal: np.ndarray
    """(n, 2) unit normals pointing laterally, from the sacrum into the ilium."""


@dataclasses.dataclass(frozen=True)
class _Geometry:
    body_centre: tuple[float, float]
    body_axes: tuple[float, float]
    sacrum: np.ndarray
    ilia: tuple[np.ndarray, np.ndarray]
    other_bone: tuple[np.ndarray, ...]
    joints: tuple[_Joint, _Joint]
    joint_gap: float
    disc: np.ndarray | None
    fluid: tuple[np.ndarray, ...]
    """Foramina and the sacral canal."""
    fascia: tuple[np.ndarray, ...]
    bowel_box: tuple[float, float, float, float]
    """x0, x1, y0, y1 of the region where bowel loops lie."""


def _ellipse(centre: Sequence[float], a: float, b: float, angle: float = 0.0, n: int = 36) -> np.ndarray:
    phi = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    c, s = np.cos(angle), np.sin(angle)
    x, y = a * np.cos(phi), b * np.sin(phi)
    return np.column_stack([centre[0] + c * x - s * y, centre[1] + s * x + c * y])


def _joint(side: int, start: np.ndarray, end: np.ndarray, bulge: float, n: int = 24) -> _Joint:
    t = np.linspace(0.0, 1.0, n)[:, None]
    centre = start + (end - start) * t
    direction = (end - start) / np.linalg.norm(end - start)
    lateral = np.array([direction[1], -direction[0]])
    lateral *= np.sign(lateral[0] * side)
    # The auricular surface is ear-shaped: its middle bows laterally.
    centre = centre + bulge * np.sin(np.pi * t) * lateral
    tangent = np.gradient(centre, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    normal = np.column_stack([tangent[:, 1], -tangent[:, 0]])
    normal *= np.sign(normal[:, :1] * side)
    return _Joint(side=side, centre=centre, normal=normal)


def _slice_geometry(a: _Anatomy, z: float) -> _Geometry:
    return (_coronal_geometry if a.plane == "coronal" else _axial_geometry)(a, z)


def _coronal_geometry(a: _Anatomy, z: float) -> _Geometry:
    # Semi-coronal slices along the sacrum: away from its middle the sacrum and the joints narrow.
    narrowing = 1.0 - 0.12 * z * z
    top, bottom = a.bone_top, a.bone_bottom
    joints = tuple(
        _joint(side, np.array([side * a.width_top[i] * narrowing, top]),
               np.array([side * a.width_bottom[i] * narrowing, bottom]), a.bulge[i])
        for i, side in enumerate((-1, 1)))
    gap = a.joint_gap
    tip = np.array([[0.0, bottom + 0.07]])
    top_edge = np.column_stack([np.linspace(joints[1].centre[0, 0], joints[0].centre[0, 0], 9), np.full(9, top)])
    top_edge[:, 1] += 0.015 * np.cos(np.linspace(-np.pi / 2, np.pi / 2, 9))
    sacrum = np.concatenate([joints[0].centre - gap * joints[0].normal, tip,
                             (joints[1].centre - gap * joints[1].normal)[::-1], top_edge])
    ilia = []
    for i, joint in enumerate(joints):
        s = joint.side
        wing = np.array([[0.40, top - 0.20], [0.58, top - 0.26], [0.76, top - 0.12],
                         [0.68, top + 0.30], [0.50, bottom + 0.02]]) * [s * narrowing, 1.0] + a.wing[i]
        ilia.append(np.concatenate([joint.centre + gap * joint.normal, wing[::-1]]))
    half_top = 0.75 * min(a.width_top) * narrowing
    vertebra = np.array([[-half_top, top - 0.22], [half_top, top - 0.22], [half_top, top - 0.065],
                         [-half_top, top - 0.065]])
    disc = np.array([[-half_top, top - 0.06], [half_top, top - 0.06], [half_top, top - 0.012],
                     [-half_top, top - 0.012]])
    fluid = []
    if abs(z) < 0.6:
        for joint in joints:
            for t in (3, 6, 9, 12):
                centre = joint.centre[t] * [0.45, 1.0]
                fluid.append(_ellipse(centre, 0.02, 0.017, n=16))
    fascia = tuple(
        np.column_stack([s * (0.62 + off + bend * np.sin(np.linspace(0, np.pi, 12))),
                         np.linspace(y - 0.25, y + 0.25, 12)])
        for s in (-1, 1) for off, y, bend in a.fascia)
    return _Geometry(body_centre=(0.0, a.body_centre_y), body_axes=a.body_axes, sacrum=sacrum, ilia=tuple(ilia),
                     other_bone=(vertebra,), joints=joints, joint_gap=gap, disc=disc, fluid=tuple(fluid),
                     fascia=fascia, bowel_box=(-0.5, 0.5, top - 0.42, top - 0.12))


def _axial_geometry(a: _Anatomy, z: float) -> _Geometry:
    # Axial slices from cranial (z = -1) to caudal (z = +1): the sacrum and the joints narrow caudally.
    narrowing = 1.0 - 0.12 * (z + 1.0)
    front, back = a.bone_top, a.bone_bottom
    joints = tuple(
        _joint(side, np.array([side * a.width_top[i] * narrowing, front + 0.03]),
               np.array([side * a.width_bottom[i] * narrowing, back]), a.bulge[i] * 0.6)
        for i, side in enumerate((-1, 1)))
    gap = a.joint_gap
    front_x = np.linspace(joints[1].centre[0, 0], joints[0].centre[0, 0], 11)
    front_edge = np.column_stack([front_x, front - 0.03 * np.cos(np.pi * front_x / (2 * max(abs(front_x))))])
    back_edge = np.array([[-0.06, back + 0.02], [0.0, back + 0.06], [0.06, back + 0.02]])
    sacrum = np.concatenate([joints[0].centre - gap * joints[0].normal, back_edge,
                             (joints[1].centre - gap * joints[1].normal)[::-1], front_edge])
    ilia = []
    for i, joint in enumerate(joints):
        s = joint.side
        outline = np.array([[0.40, front - 0.14], [0.58, front - 0.32], [0.68, front - 0.26],
                            [0.50, back - 0.20], [0.32, back + 0.06]]) * [s, 1.0] + a.wing[i]
        outline[4, 0] = s * (abs(joint.centre[-1, 0]) + 0.02 + a.wing[i, 4, 0] * 0.3)
        ilia.append(np.concatenate([joint.centre + gap * joint.normal, outline[::-1]]))
    canal = np.array([[-0.05, back - 0.10], [0.05, back - 0.10], [0.0, back - 0.03]])
    fluid = [canal]
    if z < 0.5:
        fluid += [_ellipse((s * 0.13 * narrowing, front + 0.06), 0.022, 0.016, n=16) for s in (-1, 1)]
    fascia = tuple(
        np.column_stack([s * np.linspace(0.2, 0.5, 12), y + off + (0.06 + bend) * np.sin(np.linspace(0, np.pi, 12))])
        for s in (-1, 1) for off, y, bend in zip(a.fascia[:, 0] - 0.1, (back + 0.1, back - 0.1), a.fascia[:, 2]))
    return _Geometry(body_centre=(0.0, a.body_centre_y), body_axes=a.body_axes, sacrum=sacrum, ilia=tuple(ilia),
                     other_bone=(), joints=joints, joint_gap=gap, disc=None, fluid=tuple(fluid),
                     fascia=fascia, bowel_box=(-0.4, 0.4, front - 0.45, front - 0.12))


# ----------------------------------------------------------------------------------------------------------------
# Lesions: 3-D objects attached to a joint; a slice shows the cross-section where |z - z_centre| < z_half.


@dataclasses.dataclass(frozen=True)
class _Lesion:
    kind: str
    """oedema, erosion, sclerosis or ankylosis."""
    joint: int
    position: float
    """Where along the joint its centre lies: 0 at the top (coronal) or anterior (axial) end, 1 at the other."""
    half_length: float
    """Half-extent along the joint, in anatomy units, so that lesions have one size in both planes."""
    in_ilium: bool
    depth: float
    """Distance of the lesion centre from the joint centre line, into the bone."""
    half_width: float
    """Half-extent across the joint."""
    z_centre: float
    z_half: float
    strength: float


def _conspicuity(difficulty: float) -> tuple[float, float]:
    """(contrast factor, size factor) of lesions at this difficulty."""
    return 1.5 - 1.1 * difficulty, 1.25 - 0.5 * difficulty


def _draw_lesions(rng: np.random.Generator, difficulty: float) -> tuple[_Lesion, ...]:
    contrast, size = _conspicuity(difficulty)
    lesions = []

    def z_extent():
        return float(rng.uniform(-0.7, 0.7)), float(rng.uniform(0.5, 1.1))

    for _ in range(2 + rng.poisson(1.5)):
        lesions.append(_Lesion("oedema", int(rng.integers(2)), float(rng.uniform(0.1, 0.9)),
                               float(rng.uniform(0.05, 0.14) * size), bool(rng.random() < 0.65),
                               float(rng.uniform(0.03, 0.06)), float(rng.uniform(0.018, 0.04) * size),
                               *z_extent(), float(contrast * rng.uniform(0.7, 1.3))))
    for _ in range(rng.poisson(1.2)):
        radius = float(rng.uniform(0.010, 0.02) * size)
        lesions.append(_Lesion("erosion", int(rng.integers(2)), float(rng.uniform(0.15, 0.85)), 0.0,
                               bool(rng.random() < 0.75), radius * 0.6, radius, *z_extent(),
                               float(rng.uniform(0.45, 0.65))))
    for joint in range(2):
        if rng.random() < 0.4:
            lesions.append(_Lesion("sclerosis", joint, float(rng.uniform(0.25, 0.75)), float(rng.uniform(0.05, 0.1)),
                                   True, 0.0, float(rng.uniform(0.015, 0.03)), *z_extent(),
                                   float(rng.uniform(0.3, 0.5))))
    if rng.random() < 0.15:
        lesions.append(_Lesion("ankylosis", int(rng.integers(2)), float(rng.uniform(0.3, 0.7)),
                               float(rng.uniform(0.04, 0.1)), True, 0.0, 0.0, float(rng.uniform(-0.3, 0.3)),
                               float(rng.uniform(0.8, 1.5)), 1.0))
    return tuple(lesions)


# ----------------------------------------------------------------------------------------------------------------
# Rendering.


class _Painter:
    """Draws anatomy-unit shapes into pixel canvases under one pose."""

    def __init__(self, size: int, fov: float, angle: float, scale: float, shift: Sequence[float]):
        self.size = size
        self.pixels_per_unit = size / 2.0 * scale / fov
        c, s = np.cos(angle), np.sin(angle)
        self.rotation = np.array([[c, -s], [s, c]])
        self.offset = size / 2.0 * (1.0 + np.asarray(shift) / fov) - 0.5

    def points(self, shape: np.ndarray) -> np.ndarray:
        pixels = shape @ self.rotation.T * self.pixels_per_unit + self.offset
        return np.round(pixels * (1 << _SUBPIXEL_BITS)).astype(np.int32)

    def fill(self, canvas: np.ndarray, shapes: Sequence[np.ndarray], value: float) -> np.ndarray:
        cv2.fillPoly(canvas, [self.points(s) for s in shapes], value, cv2.LINE_8, _SUBPIXEL_BITS)
        return canvas

    def line(self, canvas: np.ndarray, shapes: Sequence[np.ndarray], value: float, width: float,
             closed: bool = False) -> np.ndarray:
        thickness = max(1, int(round(width * self.pixels_per_unit)))
        cv2.polylines(canvas, [self.points(s) for s in shapes], closed, value, thickness, cv2.LINE_8,
                      _SUBPIXEL_BITS)
        return canvas

    def region(self, shapes: Sequence[np.ndarray]) -> np.ndarray:
        return self.fill(np.zeros((self.size, self.size), np.uint8), shapes, 1)


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-scale random field that varies over about size/cells pixels."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def _render_slice(a: _Anatomy, lesions: Sequence[_Lesion], z: float, slice_index: int, rng: np.random.Generator,
                  config: PhantomConfig) -> PhantomSlice:
    size, tissue, d = config.size, config.contrast, config.difficulty
    g = _slice_geometry(a, z)
    jitter = rng.normal(0.0, [np.deg2rad(0.5), 0.005, 0.005])
    painter = _Painter(size, config.fov, a.angle + jitter[0], a.scale, np.add(a.shift, jitter[1:]))
    (bx, by), (ax, ay) = g.body_centre, g.body_axes
    inner = a.skin + a.fat
    body = painter.region([_ellipse((bx, by), ax, ay, n=72)])
    under_skin = painter.region([_ellipse((bx, by), ax - a.skin, ay - a.skin, n=72)])
    # Everything but skin and subcutaneous fat lies inside this: bone or bowel drawn past it would float in fat.
    interior = painter.region([_ellipse((bx, by), ax - inner, ay - inner * 0.8, n=72)])

    canvas = tissue.muscle * (1.0 + 0.05 * _smooth_field(rng, size, 24))
    painter.line(canvas, g.fascia, tissue.fat, 0.008)
    x0, x1, y0, y1 = g.bowel_box
    for _ in range(rng.integers(3, 7)):
        loop = _ellipse((rng.uniform(x0, x1), rng.uniform(y0, y1)), *rng.uniform(0.03, 0.08, 2), rng.uniform(0, np.pi))
        gas = rng.random() < 0.25
        painter.fill(canvas, [loop], 0.03 if gas else float(rng.uniform(0.15, 0.6)))

    sacrum = painter.region([g.sacrum]) & interior
    ilia = [painter.region([ilium]) & interior for ilium in g.ilia]
    bone = sacrum | ilia[0] | ilia[1]
    if g.other_bone:
        bone |= painter.region(g.other_bone) & interior
    marrow = tissue.marrow * a.marrow_scale
    # Marrow is never uniform: red/yellow marrow blotches, stronger at higher difficulty.
    texture = 1.0 + (0.06 + 0.14 * d) * _smooth_field(rng, size, 12)
    canvas = np.where(bone > 0, marrow * texture, canvas)
    joint_band = [np.concatenate([j.centre - g.joint_gap * j.normal, (j.centre + g.joint_gap * j.normal)[::-1]])
                  for j in g.joints]
    painter.fill(canvas, joint_band, tissue.cartilage)
    painter.line(canvas, [g.sacrum, *g.ilia, *g.other_bone], tissue.cortex, 0.007, closed=True)
    if g.disc is not None:
        painter.fill(canvas, [g.disc], tissue.disc)
    painter.fill(canvas, g.fluid, tissue.fluid * 0.6)

    _paint_mimics(canvas, painter, g, bone, rng, tissue, d)
    mask = _paint_lesions(canvas, painter, g, lesions, z, sacrum, ilia, tissue, marrow) & interior
    canvas[interior == 0] = tissue.fat
    canvas[under_skin == 0] = tissue.skin
    canvas[body == 0] = 0.0

    canvas = cv2.GaussianBlur(canvas, (0, 0), 0.6 * size / 320)
    gain = float(np.exp(rng.uniform(np.log(400.0), np.log(4000.0))))
    canvas *= gain * np.exp(config.bias * _smooth_field(rng, size, 3))
    sigma = config.noise * gain
    noisy = np.hypot(canvas + sigma * rng.standard_normal(canvas.shape, np.float32),
                     sigma * rng.standard_normal(canvas.shape, np.float32))
    _burn_in_artifacts(noisy, rng, config.artifact_probability, gain)
    return PhantomSlice(image=noisy.astype(np.float32), mask=mask, bone=bone, slice_index=slice_index)


def _point_near_joint(g: _Geometry, rng: np.random.Generator, spread: float) -> np.ndarray:
    joint = g.joints[rng.integers(2)]
    k = rng.integers(1, len(joint.centre) - 1)
    return joint.centre[k] + rng.uniform(-spread, spread) * joint.normal[k]


def _paint_mimics(canvas: np.ndarray, painter: _Painter, g: _Geometry, bone: np.ndarray, rng: np.random.Generator,
                  tissue: Contrast, d: float) -> None:
    """Things that look like lesions but are not: the same in healthy and AS patients."""
    for _ in range(rng.poisson(1.0 + 3.0 * d)):
        centre = _point_near_joint(g, rng, 0.12)
        vessel = _ellipse(centre, rng.uniform(0.005, 0.012), rng.uniform(0.005, 0.03), rng.uniform(0, np.pi), 12)
        painter.fill(canvas, [vessel], tissue.fluid * rng.uniform(0.55, 0.95))
    for _ in range(rng.poisson(0.5 + 1.0 * d)):
        island = painter.region([_ellipse(_point_near_joint(g, rng, 0.1), *rng.uniform(0.012, 0.035, 2),
                                          rng.uniform(0, np.pi), 16)]) & bone
        canvas[island > 0] = tissue.fat
    contrast, size = _conspicuity(d)
    for _ in range(rng.poisson(1.5 * d)):
        joint = g.joints[rng.integers(2)]
        k = rng.integers(2, len(joint.centre) - 2)
        centre = joint.centre[k] + rng.choice([-1, 1]) * rng.uniform(0.03, 0.06) * joint.normal[k]
        tangent = joint.centre[k + 1] - joint.centre[k - 1]
        blob = painter.region([_ellipse(centre, rng.uniform(0.04, 0.1) * size, rng.uniform(0.015, 0.03) * size,
                                        np.arctan2(tangent[1], tangent[0]), 24)]) & bone
        canvas += (0.45 * contrast * tissue.oedema * rng.uniform(0.6, 1.0)) * _soften(blob, painter)


def _soften(region: np.ndarray, painter: _Painter) -> np.ndarray:
    """Region with a soft edge that stays inside it: oedema fades out towards healthy marrow."""
    return cv2.GaussianBlur(region.astype(np.float32), (0, 0), 0.012 * painter.pixels_per_unit) * region


def _paint_lesions(canvas: np.ndarray, painter: _Painter, g: _Geometry, lesions: Sequence[_Lesion], z: float,
                   sacrum: np.ndarray, ilia: Sequence[np.ndarray], tissue: Contrast, marrow: float) -> np.ndarray:
    mask = np.zeros_like(sacrum)
    for lesion in sorted(lesions, key=lambda l: ("ankylosis", "sclerosis", "oedema", "erosion").index(l.kind)):
        section = 1.0 - ((z - lesion.z_centre) / lesion.z_half) ** 2
        if section < 0.1:
            continue
        reach = float(np.sqrt(section))
        joint = g.joints[lesion.joint]
        stretch = _stretch(joint, lesion.position, lesion.half_length)
        into_bone = joint.normal * (1.0 if lesion.in_ilium else -1.0)
        bone = ilia[lesion.joint] if lesion.in_ilium else sacrum
        if lesion.kind == "oedema":
            centre_line = joint.centre[stretch] + (g.joint_gap + lesion.depth) * into_bone[stretch]
            along = centre_line[-1] - centre_line[0]
            length = max(lesion.half_length, lesion.half_width) * reach
            region = painter.region([_ellipse(centre_line.mean(axis=0), length, lesion.half_width * reach,
                                              np.arctan2(along[1], along[0]), 32)]) & bone
            canvas += (lesion.strength * tissue.oedema * (0.5 + 0.5 * reach)) * _soften(region, painter)
        elif lesion.kind == "erosion":
            k = (stretch.start + stretch.stop) // 2
            centre = joint.centre[k] + (g.joint_gap + lesion.depth) * into_bone[k]
            # Erosion is bone lost at the margin: the notch only takes pixels from the bone.
            region = painter.region([_ellipse(centre, lesion.half_width * reach, lesion.half_width * reach,
                                              n=16)]) & bone
            canvas[region > 0] = tissue.fluid * lesion.strength
        elif lesion.kind == "sclerosis":
            inner = joint.centre[stretch] + g.joint_gap * into_bone[stretch]
            outer = inner + lesion.half_width * reach * into_bone[stretch]
            region = painter.region([np.concatenate([inner, outer[::-1]])]) & bone
            canvas[region > 0] *= lesion.strength
        else:
            region = painter.line(np.zeros_like(mask), [joint.centre[stretch]], 1, 3.0 * g.joint_gap)
            canvas[region > 0] = marrow
        mask |= region
    return mask


def _stretch(joint: _Joint, position: float, half_length: float) -> slice:
    """Centre-line points within `half_length` (along the joint) of `position`; at least the three nearest."""
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(joint.centre, axis=0), axis=1))])
    distance = np.abs(arc - position * arc[-1])
    inside = np.flatnonzero(distance <= half_length)
    if inside.size < 3:
        nearest = int(np.argmin(distance))
        return slice(max(nearest - 1, 0), min(nearest + 2, len(arc)))
    return slice(int(inside[0]), int(inside[-1]) + 1)


def _burn_in_artifacts(image: np.ndarray, rng: np.random.Generator, probability: float, gain: float) -> None:
    """Scanner padding, annotation text and a ruler: constant-valued, noise-free, outside the body."""
    size = image.shape[0]
    if rng.random() < probability:
        band = int(rng.integers(size // 40, size // 12))
        edge = rng.integers(4)
        index = [slice(None), slice(None)]
        index[edge % 2] = slice(0, band) if edge < 2 else slice(size - band, size)
        image[tuple(index)] = 0.0
    if rng.random() < probability:
        text = np.zeros(image.shape, np.uint8)
        scale = size / 900.0
        for corner in rng.choice(4, size=rng.integers(1, 3), replace=False):
            x = 4 if corner % 2 == 0 else int(size * 0.72)
            y = int(size * 0.05) if corner < 2 else int(size * 0.97)
            cv2.putText(text, str(rng.choice(_BURNED_IN_TEXT)), (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, 1, 1)
        image[text > 0] = gain * rng.uniform(0.8, 1.2)
    if rng.random() < probability * 0.5:
        x = size - 6
        ticks = np.zeros(image.shape, np.uint8)
        for y in range(size // 4, 3 * size // 4, size // 40):
            cv2.line(ticks, (x, y), (size - 2, y), 1, 1)
        cv2.line(ticks, (size - 2, size // 4), (size - 2, 3 * size // 4 - size // 40), 1, 1)
        image[ticks > 0] = gain * 0.9
