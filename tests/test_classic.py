"""The classic backend: what each effect does to real footage, its edge cases, its params."""

from __future__ import annotations

import threading

from pathlib import Path

import cv2
import numpy as np
import pytest
from clips import clip_path

from stylecam.core.styles import Style, StyleError, builtin_styles, make_style
from stylecam.core.stylize import classic
from stylecam.core.stylize.base import BackendError, create_backend
from stylecam.core.stylize.classic import ClassicBackend, oil, sketch, toon, validate_params


def _read(path: Path, indices: tuple[int, ...]) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames, i = [], 0
    while i <= max(indices):
        ok, img = cap.read()
        if not ok:
            break
        if i in indices:
            frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        i += 1
    cap.release()
    assert len(frames) == len(indices), f"could not read frames {indices} of {path}"
    return frames


@pytest.fixture(scope="module")
def clips() -> dict[str, np.ndarray]:
    """One frame each of a face, a street with cyclists, and water; native sizes."""
    face, = _read(clip_path("carphone_pristine.mp4"), (40,))
    bikes, = _read(clip_path("bikes.mp4"), (125,))
    swan, = _read(clip_path("davis_blackswan.mp4"), (10,))
    return {"face": face, "bikes": bikes, "swan": swan}


def _luma(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)


def _edges(img: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    g = cv2.GaussianBlur(_luma(img), (0, 0), sigma)
    return cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _coarse(img: np.ndarray) -> np.ndarray:
    return cv2.resize(_luma(img), (16, 16), interpolation=cv2.INTER_AREA)


def _colours(img: np.ndarray) -> int:
    return len(np.unique(img.reshape(-1, 3), axis=0))


def _flat_fraction(img: np.ndarray) -> float:
    """Share of pixels whose 3x3 neighbourhood is flat (std below 2 grey levels)."""
    g = _luma(img)
    mean = cv2.blur(g, (3, 3))
    var = cv2.blur(g * g, (3, 3)) - mean * mean
    return float((var < 4.0).mean())


def _median_laplacian(img: np.ndarray) -> float:
    # The median ignores the few pixels on region borders, which a painterly filter sharpens.
    return float(np.median(np.abs(cv2.Laplacian(_luma(img), cv2.CV_32F))))


# --------------------------------------------------------------------------------------------
# What the effects do


def test_toon_flattens_colours_and_keeps_the_edges(clips):
    for name, img in clips.items():
        out = toon(img)
        flat = toon(img, edges=0.0)
        # Without ink every pixel is one of a small palette; ink only shades its borders.
        assert _colours(flat) < 0.03 * _colours(img), name
        assert _colours(out) < 0.5 * _colours(img), name
        # The cartoon's edges are the picture's edges, and not just any edges.
        assert _corr(_edges(out), _edges(img)) > 0.7, name
        assert _corr(_edges(out), _edges(img[::-1, ::-1])) < 0.3, name


def test_toon_ink_darkens_the_outlines(clips):
    img = clips["bikes"]
    edge = _edges(img, 1.5) > np.percentile(_edges(img, 1.5), 95)
    ink = _luma(toon(img, edges=2.0)) - _luma(toon(img, edges=0.0))
    assert ink.max() <= 0  # ink only darkens
    assert ink[edge].mean() < 3 * ink[~edge].mean() < 0


def test_oil_removes_fine_detail_but_keeps_the_structure(clips):
    for name, img in clips.items():
        painted = oil(img, texture=0.0)
        assert _median_laplacian(painted) <= 0.5 * _median_laplacian(img), name
        assert _flat_fraction(painted) > _flat_fraction(img) + 0.2, name
        assert _corr(_coarse(painted), _coarse(img)) > 0.95, name
        # Brush texture is a relief on the paint, not noise over it.
        textured = oil(img)
        diff = np.abs(textured.astype(np.int16) - painted).mean()
        assert 1.0 < diff < 12.0, name


def test_oil_radius_sets_the_brush_size(clips):
    img = clips["swan"]
    fine, coarse = oil(img, radius=1, texture=0.0), oil(img, radius=10, texture=0.0)
    assert _flat_fraction(coarse) > _flat_fraction(fine) + 0.1
    assert _corr(_edges(fine), _edges(img)) > _corr(_edges(coarse), _edges(img))


def test_sketch_is_grey_pencil_on_light_paper(clips):
    for name, img in clips.items():
        out = sketch(img)
        spread = out.max(axis=2).astype(int) - out.min(axis=2)
        assert spread.max() <= 20, name  # a paper tint, no colour
        # Shading follows the picture's tones.
        assert _corr(_coarse(out), _coarse(img)) > 0.75, name
        lines = _luma(sketch(img, hatching=0.0))
        assert (lines > 180).mean() > 0.7, name  # mostly paper
        edges = _edges(img, 1.5)
        strong, flat = edges > np.percentile(edges, 95), edges < np.percentile(edges, 50)
        # Pencil where the picture has edges, paper where it is flat.
        assert (255 - lines[strong]).mean() > 1.5 * (255 - lines[flat]).mean(), name


def test_sketch_without_paper_is_plain_grey_on_white(clips):
    out = sketch(clips["face"], paper=0.0, hatching=0.0)
    assert (out[:, :, 0] == out[:, :, 1]).all() and (out[:, :, 1] == out[:, :, 2]).all()
    assert np.percentile(out, 50) > 240


def test_hatching_darkens_dark_areas_only(clips):
    img = clips["face"]
    tone = cv2.GaussianBlur(_luma(img), (0, 0), 6)
    added = _luma(sketch(img, hatching=0.0)) - _luma(sketch(img, hatching=1.0))
    assert added[tone < 60].mean() > 40
    assert added[tone > 200].mean() < 2


# --------------------------------------------------------------------------------------------
# Any frame


@pytest.mark.parametrize("effect", sorted(classic.EFFECTS))
@pytest.mark.parametrize("shape", [(95, 177), (1, 1), (1, 9), (7, 2), (8, 8), (33, 300)])
def test_any_size_keeps_shape_and_dtype(effect, shape):
    img = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    out = classic.FUNCTIONS[effect](img)
    assert out.shape == img.shape and out.dtype == np.uint8 and out.flags.c_contiguous


@pytest.mark.parametrize("effect", sorted(classic.EFFECTS))
@pytest.mark.parametrize("level", [0, 128, 255])
def test_flat_frames_stay_flat_ish(effect, level):
    img = np.full((60, 80, 3), level, np.uint8)
    # (Hatching would rightly shade a mid-grey field.)
    knobs = {"hatching": 0.0} if effect == "sketch" else {}
    out = classic.FUNCTIONS[effect](img, **knobs).astype(int)
    # Texture and paper grain only; no invented edges or colour casts.
    assert np.abs(out.mean(axis=(0, 1)) - out.mean()).max() < 12
    assert out.std(axis=(0, 1)).max() < 8


@pytest.mark.parametrize("effect", ["oil", "toon"])
def test_grey_pictures_stay_grey(effect, clips):
    grey = cv2.cvtColor(cv2.cvtColor(clips["bikes"], cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    # (oil's varnish is a deliberate warm cast: without it, no colour is invented)
    knobs = {"varnish": 0.0} if effect == "oil" else {}
    out = classic.FUNCTIONS[effect](grey, **knobs).astype(int)
    assert (out.max(axis=2) - out.min(axis=2)).max() <= 1
    assert _corr(_coarse(out.astype(np.uint8)), _coarse(grey)) > 0.95


def test_oil_varnish_is_a_warm_compressed_range(clips):
    grey = cv2.cvtColor(cv2.cvtColor(clips["bikes"], cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    plain, varnished = (oil(grey, varnish=v, texture=0.0).astype(int) for v in (0.0, 1.0))
    r, g, b = varnished[..., 0], varnished[..., 1], varnished[..., 2]
    assert (r >= g).all() and (g >= b).all() and (r - b).mean() > 8  # warm, everywhere
    assert varnished[..., 1].min() >= classic.PAINT_BLACK[1] - 1 and r.max() <= classic.PAINT_WHITE[0] + 1
    assert varnished[..., 1].std() < plain[..., 1].std()  # a narrower range than the picture's
    assert _corr(_coarse(varnished.astype(np.uint8)), _coarse(plain.astype(np.uint8))) > 0.99


@pytest.mark.parametrize("effect", sorted(classic.EFFECTS))
def test_deterministic_even_after_caches_are_rebuilt(effect, clips):
    img = np.ascontiguousarray(clips["face"][:95, :117])
    first = classic.FUNCTIONS[effect](img)
    for value in vars(classic).values():
        if hasattr(value, "cache_clear"):
            value.cache_clear()
    assert np.array_equal(first, classic.FUNCTIONS[effect](img))
    assert np.array_equal(first, classic.FUNCTIONS[effect](img.copy()))


def test_input_is_not_modified(clips):
    img = clips["bikes"].copy()
    for fn in classic.FUNCTIONS.values():
        fn(img)
    assert np.array_equal(img, clips["bikes"])


@pytest.mark.parametrize("bad, words", [
    (np.zeros((10, 10, 3), np.float32), "uint8"),
    (np.zeros((10, 10), np.uint8), "(H, W, 3)"),
    (np.zeros((10, 10, 4), np.uint8), "(H, W, 3)"),
    (np.zeros((0, 10, 3), np.uint8), "(H, W, 3)"),
])
def test_bad_frames_are_refused_with_a_message(bad, words):
    with pytest.raises(ValueError, match=r"RGB uint8") as e:
        oil(bad)
    assert words in str(e.value)


# --------------------------------------------------------------------------------------------
# Params


def test_defaults_are_filled_in():
    assert validate_params({"effect": "oil"}) == {"effect": "oil", "radius": 4, "saturation": 1.25,
                                                  "texture": 0.5, "varnish": 0.5, "steady": 0.7}
    got = validate_params({"effect": "toon", "levels": 4.0, "edges": 1})
    assert got["levels"] == 4 and isinstance(got["levels"], int)
    assert got["edges"] == 1.0 and isinstance(got["edges"], float)
    for effect, knobs in classic.EFFECTS.items():
        assert set(validate_params({"effect": effect})) == {"effect", *knobs}


@pytest.mark.parametrize("params, words", [
    ({}, ["'effect'", "oil", "toon", "sketch"]),
    ({"effect": "watercolour"}, ["unknown classic effect", "'watercolour'", "oil"]),
    ({"effect": ["oil"]}, ["unknown classic effect", "['oil']"]),
    ({"effect": "oil", "levels": 3}, ["'levels'", "radius"]),
    ({"effect": "oil", "radius": 40}, ["'radius'", "between 1 and 12", "40"]),
    ({"effect": "oil", "radius": 2.5}, ["'radius'", "whole number"]),
    ({"effect": "toon", "edges": -0.1}, ["'edges'", "between"]),
    ({"effect": "sketch", "blur": "soft"}, ["'blur'", "number", "'soft'"]),
    ({"effect": "sketch", "paper": True}, ["'paper'", "number"]),
    ({"effect": "sketch", "darkness": float("nan")}, ["'darkness'", "between"]),
])
def test_bad_params_name_the_problem(params, words):
    with pytest.raises(ValueError) as e:
        validate_params(params)
    for word in words:
        assert word in str(e.value)


def test_make_style_uses_the_classic_validator():
    style = make_style({"name": "my-oil", "params": {"effect": "oil", "radius": 6}})
    assert style.backend == "classic" and style.params["radius"] == 6 and style.params["texture"] == 0.5
    with pytest.raises(StyleError, match=r"'my-oil'.*'radius'"):
        make_style({"name": "my-oil", "backend": "classic", "params": {"effect": "oil", "radius": 0}})


def test_every_builtin_classic_preset_validates():
    presets = {s.name: s for s in builtin_styles() if s.backend == "classic"}
    assert {"oil", "toon", "sketch"} <= set(presets)
    for name, style in presets.items():
        assert validate_params(dict(style.params)) == dict(style.params), name
        assert style.label and style.description, name
    assert {s.params["effect"] for s in presets.values()} == set(classic.EFFECTS)


# --------------------------------------------------------------------------------------------
# Backend


def test_backend_applies_the_style(clips):
    style = make_style({"name": "t", "backend": "classic", "params": {"effect": "toon", "levels": 3}})
    backend = create_backend(style)
    assert isinstance(backend, ClassicBackend) and backend.name == "classic"
    assert backend.batch_size == backend.workers >= 1
    backend.close()
    # Two workers paint the frames of a batch in parallel: same frames, same order as one by one.
    backend = ClassicBackend(workers=2)
    backend.set_style(style)
    frames = [clips["face"], clips["bikes"], clips["face"]]
    out = backend.process(frames)
    assert len(out) == 3
    assert np.array_equal(out[0], toon(clips["face"], levels=3))
    assert np.array_equal(out[1], toon(clips["bikes"], levels=3))
    assert np.array_equal(out[2], out[0])
    backend.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("stylecam-classic")]
    backend.set_style(make_style({"name": "s", "params": {"effect": "sketch"}}))
    assert np.array_equal(backend.process([clips["face"]])[0], sketch(clips["face"]))
    assert backend.process([]) == []
    backend.close()
    backend.close()


def test_backend_errors():
    backend = ClassicBackend()
    with pytest.raises(BackendError, match="before set_style"):
        backend.process([np.zeros((8, 8, 3), np.uint8)])
    with pytest.raises(BackendError, match="'diffusion'"):
        backend.set_style(Style(name="d", backend="diffusion", params={}))
