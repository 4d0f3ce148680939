"""The shared temporal stabilizer (core/temporal.py) in the classic backend: it steadies real
footage, leaves no ghost behind a moving object, keeps no trace of the shot before a hard cut,
and changes nothing on the first frame. Clips: the bundled one, or synthesized here."""

from __future__ import annotations

import numpy as np
import pytest

from stylecam.core.quality import clip_flows, measure, read_clip_spec
from stylecam.core.styles import load_styles, make_style
from stylecam.core.stylize.classic import ClassicBackend
from stylecam.core.temporal import Stabilizer, Steadiness, scene_cut


@pytest.fixture(scope="module")
def swan():
    """24 frames of the bundled clip (DAVIS blackswan), fitted to 320x320 to keep the test short."""
    return read_clip_spec("demo", 24, (320, 320))[1]


def run(style, frames, steady=True, workers=2):
    backend = ClassicBackend(workers=workers, steady=steady)
    backend.set_style(style)
    out = []
    for i in range(0, len(frames), backend.batch_size):
        out.extend(backend.process(frames[i:i + backend.batch_size]))
    backend.close()
    return out


def moving_square(n=10, size=(192, 256), step=7):
    """A still, textured scene with a bright square crossing it, ``step`` px per frame."""
    rng = np.random.default_rng(5)
    h, w = size
    import cv2

    base = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (0, 0), 3)
    base = cv2.normalize(base, None, 40, 200, cv2.NORM_MINMAX)
    frames, boxes = [], []
    for t in range(n):
        img = base.copy()
        x0, y0 = 20 + step * t, 70
        img[y0:y0 + 48, x0:x0 + 48] = (250, 240, 60)
        frames.append(img)
        boxes.append((y0, x0))
    return frames, boxes


@pytest.mark.parametrize("name", ["oil", "toon", "sketch"])
def test_no_ghost_trail_behind_a_moving_object(name):
    styles, _ = load_styles()
    frames, boxes = moving_square()
    steady = run(styles[name], frames)
    plain = run(styles[name], frames, steady=False)
    h, w = frames[0].shape[:2]

    def covered(t):
        m = np.zeros((h, w), bool)
        y0, x0 = boxes[t]
        m[y0:y0 + 48, x0:x0 + 48] = True
        return m

    checked = 0
    for t in range(4, len(frames)):
        now = covered(t)
        # Where the object was 1 and 3 frames ago and is no longer: the trail. What is left of
        # the object there, as a share of how different its painting was from the background's.
        for back, limit in ((1, 0.25), (3, 0.06)):
            trail = covered(t - back) & ~now
            for k in range(1, back):
                trail &= ~covered(t - k)
            if trail.sum() < 50:
                continue
            diff = np.abs(steady[t].astype(np.int16) - plain[t]).mean(-1)[trail].mean()
            contrast = np.abs(plain[t - back].astype(np.int16) - plain[t]).mean(-1)[trail].mean()
            if contrast <= 10:  # (sketch draws the object as an outline: its inside is paper)
                continue
            checked += 1
            # (sketch's paper grain, moved along the motion, may differ by a level or two there)
            assert diff < max(limit * contrast, 2.0 if name == "sketch" else 0.0), \
                f"{name}: a trail {back} frame(s) behind the object keeps {diff / contrast:.0%} of it"
    assert checked >= 5, f"{name}: only {checked} trails had anything to leave behind"


@pytest.mark.parametrize("name", ["oil", "toon", "sketch"])
def test_a_hard_scene_cut_leaves_no_trace(name, swan):
    styles, _ = load_styles()
    # Shot A, then shot B: the same clip turned upside down with its colours inverted.
    other = [np.ascontiguousarray(255 - f[::-1, ::-1]) for f in swan[:6]]
    frames = swan[:6] + other
    assert scene_cut(frames[5], frames[6])[0] and not scene_cut(frames[4], frames[5])[0]
    steady = run(styles[name], frames)
    plain = run(styles[name], frames, steady=False)
    assert not np.array_equal(steady[5], plain[5])  # it was steadying before the cut...
    assert np.array_equal(steady[6], plain[6])      # ...and the first frame after it is the new shot's alone


def test_first_frame_and_style_switch_come_out_as_painted(swan):
    styles, _ = load_styles()
    backend = ClassicBackend(workers=1)
    backend.set_style(styles["oil"])
    first = backend.process([swan[0]])[0]
    plain = ClassicBackend(workers=1, steady=False)
    plain.set_style(styles["oil"])
    assert np.array_equal(first, plain.process([swan[0]])[0])
    backend.process([swan[1]])
    backend.set_style(styles["toon"])  # a new style starts afresh
    plain.set_style(styles["toon"])
    assert np.array_equal(backend.process([swan[2]])[0], plain.process([swan[2]])[0])


def test_a_still_scene_stays_still(swan):
    styles, _ = load_styles()
    out = run(styles["sketch"], [swan[0]] * 5)
    for o in out[1:]:
        assert np.abs(o.astype(np.int16) - out[0]).max() <= 1


@pytest.mark.parametrize("name", ["oil", "toon", "sketch", "sketch-clean"])
def test_stabilizer_steadies_real_footage(name, swan):
    styles, _ = load_styles()
    cf = clip_flows(swan)
    off = measure(swan, run(styles[name], swan, steady=False), cf)
    on = measure(swan, run(styles[name], swan), cf)
    # Issue 15's thresholds on the bundled clip: 1.3 for oil and toon, 1.5 for the others; and the
    # stabilizer must take off at least a fifth of what the style flickered without it.
    bar = 1.3 if name in ("oil", "toon") else 1.5
    assert on["flicker"] < 0.8 * off["flicker"] and on["flicker"] <= bar, (off, on)
    assert on["edges"] >= 0.5 and on["strength"] >= 6, on


def test_one_worker_and_two_give_the_same_stream(swan):
    styles, _ = load_styles()
    a = run(styles["oil"], swan[:5], workers=1)
    b = run(styles["oil"], swan[:5], workers=2)
    for x, y in zip(a, b):
        assert np.abs(x.astype(np.int16) - y).max() <= 1


def test_steadiness_and_preset_errors():
    with pytest.raises(ValueError, match="strength"):
        Steadiness(1.0)
    with pytest.raises(ValueError, match="mode"):
        Steadiness(0.5, "smear")
    with pytest.raises(ValueError, match="'steady' must be between 0.0 and 0.95"):
        make_style({"name": "x", "params": {"effect": "oil", "steady": 2}})
    assert Stabilizer().steadiness.on is False


def test_quality_command_and_its_bench_alias(tmp_path):
    """`stylecam quality` in a subprocess, as a user runs it, on the bundled clip followed by a
    second shot (the clip upside down, colours inverted: a hard cut); `stylecam bench --quality`
    gives the same rows."""
    import json
    import subprocess
    import sys

    import cv2

    other = tmp_path / "other.avi"
    writer = cv2.VideoWriter(str(other), cv2.VideoWriter_fourcc(*"MJPG"), 24, (160, 160))
    for f in read_clip_spec("demo", 4, (160, 160))[1]:
        writer.write(cv2.cvtColor(np.ascontiguousarray(255 - f[::-1, ::-1]), cv2.COLOR_RGB2BGR))
    writer.release()
    rows = []
    for i, head in enumerate((["quality"], ["bench", "--quality"])):
        out = tmp_path / f"rows{i}.jsonl"
        cmd = [sys.executable, "-m", "stylecam.core", *head, "--source", f"demo+file:{other}", "--frames", "8",
               "--size", "160x160", "--styles", "toon", "--json", str(out), "--strips", str(tmp_path)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        assert "| toon |" not in p.stdout and "toon" in p.stdout  # the plain table
        rows.append([json.loads(line) for line in out.read_text().splitlines()])
    assert [r["steady"] for r in rows[0]] == [False, True]
    for r in rows[0]:
        assert r["clip"] == "demo+other" and r["frames"] == 8 and r["cuts"] == 1  # the cut between the two
        assert r["flicker"] > 0 and r["edges"] > 0.5 and r["strength"] > 6
    assert rows[0][1]["flicker"] < rows[0][0]["flicker"]
    strip = (tmp_path / "toon.jpg").read_bytes()
    assert strip[:2] == b"\xff\xd8"
    # Same frames, same styles: the same figures (fps aside).
    drop = ("fps", "machine")
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows[1]] == \
        [{k: v for k, v in r.items() if k not in drop} for r in rows[0]]


def test_steadied_at_the_working_size_of_a_720p_stream():
    """At 1280x720 each style mixes its small picture (oil 640x360, sketch 960x540 with a 640x360
    change test) and scales it up: the first frame is the painting, the next ones are steadied
    (close to the painting, not equal), and a still scene stays still."""
    from stylecam.core.bench import sample_frames

    styles, _ = load_styles()
    clip = sample_frames((1280, 720), 4)
    for name in ("oil", "toon", "sketch"):
        steady, plain = run(styles[name], clip), run(styles[name], clip, steady=False)
        assert all(o.shape == (720, 1280, 3) and o.dtype == np.uint8 for o in steady)
        assert np.array_equal(steady[0], plain[0])
        for s, p in zip(steady[1:], plain[1:]):
            diff = np.abs(s.astype(np.int16) - p).mean()
            assert 0.05 < diff < 12, (name, diff)
        still = run(styles[name], [clip[0]] * 4)
        assert all(np.abs(o.astype(np.int16) - still[0]).max() <= 1 for o in still[1:]), name


def test_a_failing_frame_fails_its_batch_without_hanging(swan, monkeypatch):
    from stylecam.core.stylize import classic

    styles, _ = load_styles()
    backend = ClassicBackend(workers=2)
    backend.set_style(styles["oil"])
    paint = classic.STAGES["oil"].paint
    calls = []

    def broken(image, anchor=None, **knobs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("painting failed")
        return paint(image, anchor, **knobs)

    monkeypatch.setitem(classic.STAGES, "oil", classic.Stages(classic._oil_mix, broken, classic._oil_finish))
    backend.set_style(styles["oil"])
    with pytest.raises(RuntimeError, match="painting failed"):
        backend.process(swan[:2])
    # The stream goes on with the next batch.
    out = backend.process(swan[2:4])
    assert len(out) == 2 and out[0].shape == swan[2].shape
    backend.close()


def test_stabilizer_refuses_a_picture_of_another_size_and_a_bad_reach(swan):
    stab = Stabilizer(Steadiness(0.7))
    motion = stab.prepare(None, swan[0], (160, 160))
    with pytest.raises(ValueError, match="not the 160x160"):
        stab.apply(swan[0], motion)
    with pytest.raises(ValueError, match="reach"):
        Steadiness(0.5, "blend", 24.0, 40)


def test_a_mix_in_bands_from_several_threads_equals_the_whole_mix(swan):
    """Stabilizer.begin cuts the mix into bands of rows that any thread may run: three threads
    on three bands give exactly what one apply gives, frame after frame (packed RGB and a grey
    picture mixed at another size than its change test)."""
    import threading

    import cv2

    for shape, mix in (((160, 160, 3), (160, 160)), ((240, 240), (240, 240))):
        whole, banded = Stabilizer(Steadiness(0.8, "blend", 24.0, 2)), Stabilizer(Steadiness(0.8, "blend", 24.0, 2))
        prev = None
        for img in swan[:6]:
            grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
            picture = cv2.resize(img, mix) if len(shape) == 3 else cv2.resize(grey, mix)
            view = whole.look(img, mix)
            motion = whole.motion(prev, view)
            prev = view
            expected = whole.apply(picture, motion)
            mixing = banded.begin(picture, motion, parts=3)
            threads = [threading.Thread(target=mixing.help) for _ in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert np.array_equal(mixing.result(), expected)
        assert not np.array_equal(expected, picture)  # (the last frames were steadied)


def test_the_uint8_blend_is_within_a_level_of_the_exact_one():
    from stylecam.core.temporal import _blend

    rng = np.random.default_rng(3)
    past, new = rng.integers(0, 256, (64, 80, 4), dtype=np.uint8), rng.integers(0, 256, (64, 80, 4), dtype=np.uint8)
    weight = rng.integers(0, 256, (64, 80), dtype=np.uint8)
    w = weight[..., None] / 255.0
    exact = past * w + new * (1 - w)
    assert np.abs(_blend(past, new, weight) - exact).max() <= 1.0
    assert np.array_equal(_blend(past, new, np.zeros((64, 80), np.uint8)), new)
    assert np.array_equal(_blend(past, new, np.full((64, 80), 255, np.uint8)), past)


def test_anchored_textures_read_from_the_padded_copy_equal_a_wrapped_read():
    """Textures are read from a copy padded by half a period, with the offset moved by whole
    periods: the same pixels as reading the texture itself with wrapping, wherever it went."""
    import cv2

    from stylecam.core.temporal import Anchor, _grid2

    rng = np.random.default_rng(4)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (90, 160, 4), dtype=np.uint8), (0, 0), 1.0)
    th, tw = 36, 64  # the thumbnail the offset is in
    yy, xx = np.mgrid[0:th, 0:tw].astype(np.float32)
    for shift in ((0.3, -0.7), (25.5, 9.25), (-70.0, 40.0), (130.0, -75.0)):  # up to two periods away
        offset = np.dstack([shift[0] + 0.05 * xx, shift[1] - 0.03 * yy]).astype(np.float32)
        got = Anchor(offset).sample(texture)
        flow = cv2.resize(cv2.multiply(offset, (160 / tw, 90 / th, 0.0, 0.0)), (160, 90),
                          interpolation=cv2.INTER_LINEAR)
        want = cv2.remap(texture, cv2.add(_grid2(160, 90), flow), None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        assert np.abs(got.astype(np.int16) - want).max() <= 1, shift


def test_the_stabilizer_keeps_anchor_offsets_within_half_a_period(swan):
    """A long pan must not push the texture anchor ever further out (the slow wrapping path):
    its mean stays within half a thumbnail of zero, and the texture it reads is unchanged."""
    import cv2

    stab = Stabilizer(Steadiness(0.7))
    big = cv2.resize(swan[0], (640, 320))
    prev = None
    for k in range(30):  # the picture slides 9 px a frame to the left: 270 px in all
        frame = np.ascontiguousarray(np.roll(big, -9 * k, axis=1)[:, :320])
        view = stab.look(frame, (320, 320))
        motion = stab.motion(prev, view)
        prev = view
        anchor = stab.anchor(motion)
    assert anchor is not None and not motion.cut
    th, tw = anchor.offset.shape[:2]
    mx, my = cv2.mean(anchor.offset)[:2]
    assert abs(mx) <= tw / 2 + 1 and abs(my) <= th / 2 + 1


def test_hold_keeps_a_still_scene_whole_and_lets_a_change_through(swan):
    """``hold``: where nothing moves and the input stays within the hold of what the picture
    stands for, the previous picture is kept exactly, however differently the style repainted it;
    where the input changed by more, the new painting comes through."""
    rng = np.random.default_rng(6)
    frame = swan[0]
    held = Stabilizer(Steadiness(0.9, "blend", 48.0, hold=8.0))
    blended = Stabilizer(Steadiness(0.9, "blend", 48.0))
    prev = {}
    outs = {id(held): [], id(blended): []}
    for k in range(4):
        img = frame.copy()
        if k == 3:  # a bright patch appears
            img[40:120, 40:120] = 250
        picture = rng.integers(0, 256, frame.shape, dtype=np.uint8)  # repainted anew every frame
        for stab in (held, blended):
            view = stab.look(img)
            motion = stab.motion(prev.get(id(stab)), view)
            prev[id(stab)] = view
            outs[id(stab)].append((stab.apply(picture, motion), picture))
    h = outs[id(held)]
    assert np.array_equal(h[1][0], h[0][0]) and np.array_equal(h[2][0], h[0][0])
    b = outs[id(blended)]
    assert not np.array_equal(b[1][0], b[0][0])
    patch = (slice(50, 110), slice(50, 110))
    assert np.abs(h[3][0][patch].astype(np.int16) - h[3][1][patch]).mean() < 2  # the change came through
    assert np.array_equal(h[3][0][200:, 200:], h[0][0][200:, 200:])  # the rest held
    with pytest.raises(ValueError, match="hold"):
        Steadiness(0.5, hold=40.0)


@pytest.mark.parametrize("workers", [1, 2])
def test_reset_temporal_forgets_the_previous_picture(swan, workers):
    """After ``reset_temporal`` the stream goes on as a fresh one: no motion is measured from the
    last frame before the reset (a stale view would anchor oil's textures to the old shot one
    frame early), and the first frame after it comes out as painted."""
    styles, _ = load_styles()
    be = ClassicBackend(workers=workers)
    be.set_style(styles["oil"])
    for i in range(0, 8, workers):
        be.process(swan[i:i + workers])
    be.reset_temporal()
    assert be._last_view is None
    after = [o for i in range(12, 20, workers) for o in be.process(swan[i:i + workers])]
    be.close()
    fresh = run(styles["oil"], swan[12:20], workers=workers)
    plain = run(styles["oil"], swan[12:13], steady=False, workers=1)
    assert np.array_equal(after[0], plain[0])
    assert all(np.array_equal(a, b) for a, b in zip(after, fresh))


def test_a_large_plain_object_that_moves_keeps_its_motion():
    """On a featureless area the still-or-moved test cannot decide: a large flow there (DIS's,
    propagated from the object's edges) is kept, so the painting moves with a plain object
    instead of staying on the screen while the object slides away under it; the textured still
    background around it keeps a flow of exactly zero."""
    import cv2

    rng = np.random.default_rng(3)
    h, w = 288, 512
    base = cv2.normalize(cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (0, 0), 2),
                         None, 40, 200, cv2.NORM_MINMAX)

    def frame(y):
        img = base.copy()
        img[y:y + 120, 180:330] = (235, 235, 230)  # a plain white roof…
        img[y + 4:y + 10, 186:200] = (60, 60, 60)  # …with one mark near its edge
        return img

    motion = Stabilizer(Steadiness(0.9)).prepare(frame(120), frame(108))  # 12 px up
    assert not motion.cut
    s = motion.flow.shape[1] / w  # thumbnail px per frame px
    inner = motion.flow[int(118 * s):int(200 * s), int(200 * s):int(310 * s), 1] / s
    assert (inner != 0).mean() > 0.9 and abs(float(np.median(inner)) - 12) < 3
    assert not motion.flow[int(260 * s):, :int(150 * s)].any()


def test_still_areas_are_copied_exactly_and_the_moving_box_equals_a_full_warp():
    """Where the flow is zero the state is read in place, not remapped: a still scene's mix has
    no maps at all, and a mix with a moving object in a still room equals, pixel for pixel, the
    same mix with the whole picture remapped; the still room's pixels are the exact blend of the
    unmoved state with the new picture."""
    import cv2

    from stylecam.core import temporal

    frames, boxes = moving_square(n=6)
    rng = np.random.default_rng(1)
    pictures = [cv2.GaussianBlur(rng.integers(0, 255, f.shape, dtype=np.uint8), (0, 0), 1.5) for f in frames]
    stab = Stabilizer(Steadiness(0.8))
    still = stab.prepare(frames[0], frames[0])
    assert not still.cut and still.maps is None and still.box is None
    stab.apply(pictures[0], stab.prepare(None, frames[0]))
    for t in range(1, len(frames)):
        motion = stab.prepare(frames[t - 1], frames[t])
        assert motion.maps is not None and motion.box is not None
        x0, y0, x1, y1 = motion.box
        assert (x1 - x0) * (y1 - y0) < 0.5 * frames[t].shape[0] * frames[t].shape[1]  # the square's, not all
        state = stab._state[0].copy()
        full = cv2.remap(state, *motion.maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        weight = stab._weight(cv2.extractChannel(full, 3), motion.view.luma, motion.trust, motion.view.mix[0])
        want = cv2.cvtColor(temporal._blend(full, temporal._planes(pictures[t], motion.view.luma)[0], weight),
                            cv2.COLOR_RGBA2RGB)
        got = stab.apply(pictures[t], motion)
        assert np.array_equal(got, want)
        outside = np.ones(got.shape[:2], bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(full[outside], state[outside])  # the identity there: a copy


def test_anchored_textures_are_read_in_place_where_nothing_moved():
    """An anchor whose offset is zero but for one patch reads a texture exactly as a full remap
    through its maps does, and outside the patch's box the texture is its own pixels."""
    import cv2

    from stylecam.core.temporal import Anchor, _padded

    rng = np.random.default_rng(2)
    texture = rng.integers(0, 255, (90, 160, 4), dtype=np.uint8)
    texture.setflags(write=False)
    offset = np.zeros((72, 128, 2), np.float32)
    offset[20:30, 40:60] = (3.4, -1.7)
    anchor = Anchor(offset)
    full = cv2.remap(_padded(texture), *anchor.maps(160, 90), cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    got = anchor.sample(texture)
    assert np.array_equal(got, full) and not np.array_equal(got, texture)
    assert np.array_equal(got[60:], texture[60:]) and np.array_equal(got[:, 100:], texture[:, 100:])


def test_a_carried_flow_is_measured_afresh_at_a_cut_or_a_change_of_motion():
    """``carry``: on a steady pan, every other frame carries the flow before it on (no new flow,
    the same warp maps); a hard cut, or the pan stopping, is not explained by the carried flow:
    that frame gets a fresh flow (and the cut is found)."""
    import cv2

    rng = np.random.default_rng(4)
    world = cv2.GaussianBlur(rng.integers(0, 255, (260, 560, 3), dtype=np.uint8), (0, 0), 2.5)
    world = cv2.normalize(world, None, 30, 220, cv2.NORM_MINMAX)
    other = np.ascontiguousarray(world[::-1, ::-1])

    def pan(x):
        return np.ascontiguousarray(world[20:20 + 216, x:x + 384])

    stab = Stabilizer(Steadiness(0.8), carry=True)
    frames = [pan(6 * t) for t in range(4)] + [pan(18), other[:216, :384]]
    motions, prev = [], None
    for f in frames:
        view = stab.look(f)
        motions.append(stab.motion(prev, view))
        prev = view
    assert [m.carried for m in motions[:4]] == [False, False, True, False]
    assert motions[2].maps is motions[1].maps and motions[2].flow is motions[1].flow
    assert not motions[2].cut and motions[2].consistent > 0.9
    # Frame 4 may carry (frame 3 carried nothing) but the pan stopped: measured afresh; frame 5
    # may carry (frame 4's flow is its own) but is a hard cut: found, not carried over.
    assert not motions[4].carried and not motions[4].cut and not motions[4].flow.any()
    assert motions[5].cut and not motions[5].carried
    assert not stab.motion(prev, stab.look(frames[-1]), carry=False).carried
