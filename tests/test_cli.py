"""The CLI end to end: real clips in, real files out; every bad input is one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from stylecam.core import cli

from clips import clip_path, read_clip


def run_cli(*args):
    """Run ``stylecam`` in a subprocess, as a user would; returns (rc, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "stylecam.core", *args], capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def _frames(path):
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, img = cap.read()
        if not ok:
            return out
        out.append(img)


def test_run_oil_on_a_720p_clip_keeps_every_frame_and_the_scene(tmp_path):
    # A 1280x720 clip made from a real one (bikes is 640x272): the acceptance case of the issue.
    src = tmp_path / "bikes720.mp4"
    frames = read_clip(clip_path("bikes.mp4"), 24)
    w = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"mp4v"), 25, (1280, 720))
    for f in frames:
        w.write(cv2.cvtColor(cv2.resize(f, (1280, 720)), cv2.COLOR_RGB2BGR))
    w.release()
    out = tmp_path / "out.mp4"
    assert cli.main(["run", "--source", f"file:{src}", "--sink", f"file:{out}", "--style", "oil"]) == 0
    inp, res = _frames(src), _frames(out)
    assert len(res) == len(inp) == 24
    assert res[0].shape == (720, 1280, 3)
    a = cv2.cvtColor(inp[12], cv2.COLOR_BGR2GRAY).astype(np.float32)
    b = cv2.cvtColor(res[12], cv2.COLOR_BGR2GRAY).astype(np.float32)
    # Structure kept: coarse layout correlates strongly with the input ...
    small = lambda g: cv2.resize(g, (64, 36), interpolation=cv2.INTER_AREA).ravel()
    assert np.corrcoef(small(a), small(b))[0, 1] > 0.85
    # ... visibly painted: fine detail (Laplacian energy) differs markedly from the input.
    lap = lambda g: cv2.Laplacian(g, cv2.CV_32F).var()
    assert abs(lap(b) - lap(a)) / lap(a) > 0.25
    assert np.abs(a - b).mean() > 4


def test_run_to_png_folder_with_size_and_frames(tmp_path):
    out = tmp_path / "frames"
    rc = cli.main(["run", "--source", f"file:{clip_path('carphone_pristine.mp4')}", "--sink", f"file:{out}/",
                   "--style", "toon", "--frames", "5", "--size", "320x240"])
    assert rc == 0
    files = sorted(out.glob("*.png"))
    assert len(files) == 5
    assert cv2.imread(str(files[0])).shape == (240, 320, 3)


def test_grey_and_odd_sized_clip_still_runs(tmp_path):
    src = tmp_path / "grey_odd.avi"
    w = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"MJPG"), 10, (97, 61), isColor=False)
    for i in range(6):
        w.write(np.full((61, 97), 40 * i, np.uint8))
    w.release()
    out = tmp_path / "o.mp4"
    assert cli.main(["run", "--source", f"file:{src}", "--sink", f"file:{out}", "--style", "sketch"]) == 0
    assert len(_frames(out)) == 6


def test_demo_source_and_several_sinks(tmp_path, capsys):
    out = tmp_path / "demo.mp4"
    assert cli.main(["run", "--source", "demo", "--sink", f"file:{out}", "--sink", "null", "--frames", "4"]) == 0
    assert len(_frames(out)) == 4
    assert str(out) in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["run", "--source", "file:/nonexistent/clip.mp4", "--sink", "null"], "not found"),
    (["run", "--style", "no-such-style"], "known styles: "),
    (["run", "--size", "12by7"], "expected WIDTHxHEIGHT"),
    (["run", "--size", "0x10"], "between"),
    (["run", "--sink", "ftp:somewhere"], "unknown sink"),
    (["run", "--sink", "file:out.txt"], ".mp4"),
    (["run", "--source", "webcam9"], "unknown source"),
    (["run", "--frames", "-3"], "1 or more"),
    (["bench", "--style", "nope"], "unknown classic style"),
])
def test_bad_input_is_one_line_and_exit_code(args, message):
    rc, out, err = run_cli(*args)
    assert rc in (1, 2), err
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert message in lines[0] and "Traceback" not in err


def test_unreadable_file_exit_code(tmp_path):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00" * 4096)
    rc, out, err = run_cli("run", "--source", f"file:{bad}", "--sink", "null")
    assert rc == 1 and "cannot read" in err or "no readable" in err
    assert "Traceback" not in err


def test_styles_lists_builtins():
    rc, out, err = run_cli("styles")
    assert rc == 0
    for name in ("oil", "toon", "sketch"):
        assert any(line.split()[0] == name for line in out.splitlines() if line.strip())


def test_user_style_file_and_corrupt_file(tmp_path, monkeypatch):
    from stylecam.core import styles as styles_mod

    folder = tmp_path / "styles"
    folder.mkdir()
    (folder / "mine.toml").write_text('[[style]]\nname = "my-toon"\nbackend = "classic"\n'
                                      'params = { effect = "toon" }\n')
    (folder / "broken.toml").write_text("[[style]\nname = ")
    monkeypatch.setattr(styles_mod, "user_style_dir", lambda: folder)
    found, warnings = styles_mod.load_styles()
    assert "my-toon" in found and found["my-toon"].origin.endswith("mine.toml")
    assert len(warnings) == 1 and "broken.toml" in warnings[0] and "TOML" in warnings[0]


def test_bench_writes_json_rows(tmp_path):
    path = tmp_path / "rows.jsonl"
    rc, out, err = run_cli("bench", "--backend", "classic", "--style", "toon", "--size", "320x180",
                           "--frames", "5", "--json", str(path))
    assert rc == 0, err
    row = json.loads(path.read_text().splitlines()[0])
    assert row["style"] == "toon" and row["width"] == 320 and row["fps"] > 0
    assert row["ms_p95"] >= row["ms_p50"] > 0 and row["machine"]["cpu_count"] >= 1
    assert "toon" in out


@pytest.mark.parametrize("command", [
    ["gallery", "--styles", "toon", "--tile", "64x48", "--out"],
    ["quality", "--styles", "toon", "--frames", "4", "--size", "64x48", "--json"],
    ["bench", "--backend", "classic", "--style", "toon", "--size", "64x48", "--frames", "3", "--json"],
])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(command, tmp_path, capsys):
    """Minutes of measuring must not end in a traceback at the last step: one line, exit 2, first."""
    (tmp_path / "notes.txt").write_text("kept")
    picture = command[0] == "gallery"
    for out, said in ((tmp_path / "missing" / ("g.png" if picture else "rows.jsonl"), "does not exist"),
                      (tmp_path, "is a folder")):
        assert cli.main([*command, str(out)]) == 2
        err = capsys.readouterr().err
        assert said in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    if picture:
        assert cli.main([*command, str(tmp_path / "notes.txt")]) == 2
        assert "give a picture file name" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "kept" and not (tmp_path / "missing").exists()


def test_quality_strips_where_a_file_is_and_a_source_that_is_not_a_video(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a video")
    assert cli.main(["quality", "--styles", "toon", "--strips", str(tmp_path / "notes.txt" / "strips")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert cli.main(["quality", "--styles", "toon", "--source", f"file:{tmp_path / 'notes.txt'}"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "notes.txt" in err


def test_a_gallery_of_an_ai_style_with_no_model_is_one_line(tmp_path, capsys, offline):
    pytest.importorskip("torch")
    assert cli.main(["gallery", "--styles", "ai-oil", "--tile", "64x48", "--out", str(tmp_path / "g.png")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("stylecam: ") and "Traceback" not in err and not (tmp_path / "g.png").exists()


def test_gallery(tmp_path):
    out = tmp_path / "g.png"
    rc = cli.main(["gallery", "--source", f"file:{clip_path('carphone_pristine.mp4')}",
                   "--styles", "oil,toon", "--tile", "160x120", "--out", str(out)])
    assert rc == 0
    img = cv2.imread(str(out))
    assert img.shape == (120, 480, 3)
