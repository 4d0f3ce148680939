"""Bad input from the user's own files: outputs that would overwrite something by surprise,
sources that are not videos or break mid-clip, hostile style files. One clear line each,
nothing lost, and the rest keeps working. Real files, pipes and `stylecam` processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest

from stylecam.core import cli
from stylecam.core.sinks import FileSink, OutputRefused
from stylecam.core.styles import MAX_FILE_BYTES, load_styles


def run_cli(*args, env=None, timeout=60):
    p = subprocess.run([sys.executable, "-m", "stylecam.core", *args], capture_output=True, text=True,
                       timeout=timeout, env=env)
    return p.returncode, p.stdout, p.stderr


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _clip(path, frames=12, size=(64, 48)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 20 * i, np.uint8))
    writer.release()
    return path


# ---- never overwrite by surprise ---------------------------------------------------------------


def test_an_existing_output_file_is_refused_and_kept_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"my earlier recording")
    rc = cli.main(["run", "--source", "pattern", "--size", "64x48", "--frames", "5", "--sink", f"file:{out}"])
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2
    assert line == f"stylecam: error: output {out} already exists (a file); pass --overwrite to replace it"
    assert out.read_bytes() == b"my earlier recording"
    assert cli.main(["run", "--source", "pattern", "--size", "64x48", "--frames", "5", "--sink", f"file:{out}",
                     "--overwrite"]) == 0
    assert out.read_bytes()[4:8] == b"ftyp"  # a new video replaced it


def test_a_frame_folder_with_files_is_refused_and_overwrite_leaves_no_older_frame(tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(8):
        (folder / f"frame_{i:06d}.png").write_bytes(b"old")
    (folder / "notes.txt").write_text("mine")
    rc = cli.main(["run", "--source", "pattern", "--size", "64x48", "--frames", "3", "--sink", f"file:{folder}/"])
    assert rc == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"stylecam: error: output folder {folder}/ is not empty (9 entries); pass --overwrite to replace it")
    assert (folder / "frame_000007.png").read_bytes() == b"old"
    assert cli.main(["run", "--source", "pattern", "--size", "64x48", "--frames", "3", "--sink", f"file:{folder}/",
                     "--overwrite"]) == 0
    # Three new frames, no frame of the older run mixed in, the user's own file untouched.
    assert sorted(p.name for p in folder.iterdir()) == ["frame_000000.png", "frame_000001.png",
                                                         "frame_000002.png", "notes.txt"]
    assert cv2.imread(str(folder / "frame_000002.png")).shape == (48, 64, 3)


def test_a_symlink_output_is_refused_unless_overwrite(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("do not lose me")
    link = tmp_path / "link.mp4"
    link.symlink_to(notes)
    rc = cli.main(["run", "--source", "pattern", "--size", "64x48", "--frames", "3", "--sink", f"file:{link}"])
    assert rc == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"stylecam: error: output {link} is a symbolic link (to {notes}); writing would replace what it points "
        "to; pass --overwrite to replace it")
    assert notes.read_text() == "do not lose me"
    # A link to nowhere yet is refused the same way (it would create a file elsewhere).
    dangling = tmp_path / "dangling.mp4"
    dangling.symlink_to(tmp_path / "elsewhere.mp4")
    with pytest.raises(OutputRefused, match="is a symbolic link"):
        FileSink(str(dangling))


@pytest.mark.parametrize("via", ["same path", "symlink", "relative path"])
def test_the_input_itself_is_never_an_output_even_with_overwrite(tmp_path, capsys, monkeypatch, via):
    clip = _clip(tmp_path / "mine.avi")
    before = clip.read_bytes()
    out = {"same path": clip, "symlink": tmp_path / "alias.avi", "relative path": "./mine.avi"}[via]
    if via == "symlink":
        out.symlink_to(clip)
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["run", "--source", f"file:{clip}", "--sink", f"file:{out}", "--overwrite"])
    assert rc == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"stylecam: error: output {out} is the input {clip}; write the result somewhere else")
    assert clip.read_bytes() == before


def test_a_name_too_long_says_so(tmp_path):
    out = tmp_path / ("x" * 300 + ".mp4")
    rc, _, err = run_cli("run", "--source", "pattern", "--size", "64x48", "--frames", "3", "--sink", f"file:{out}")
    assert rc == 1
    assert "File name too long" in err and "writable" not in err


# ---- sources that are not videos, or break mid-clip -------------------------------------------------


def test_a_still_image_as_a_file_source_is_one_line_and_a_failure(tmp_path):
    still = tmp_path / "photo.png"
    cv2.imwrite(str(still), np.full((48, 64, 3), 120, np.uint8))
    out = tmp_path / "out.mp4"
    rc, stdout, err = run_cli("run", "--source", f"file:{still}", "--sink", f"file:{out}")
    assert rc == 1
    assert one_error_line(err) == (f"stylecam: {still} is a still image, not a video; give a video file (or demo "
                                   "for the bundled clip)")
    assert "output written" not in stdout and not out.exists()


def test_a_pipe_that_yields_no_frame_is_one_line_and_a_failure(tmp_path):
    fifo = tmp_path / "stream.ts"
    os.mkfifo(fifo)
    out = tmp_path / "out.mp4"

    def writer():  # another program opens the pipe, sends something that is not video, and leaves
        with open(fifo, "wb") as f:
            f.write(b"\x47" + os.urandom(4000))

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    rc, stdout, err = run_cli("run", "--source", f"file:{fifo}", "--sink", f"file:{out}", timeout=60)
    t.join(5)
    assert rc == 1
    line = one_error_line(err)
    assert line in (f"stylecam: cannot read {fifo} as video (unsupported or corrupt file)",
                    f"stylecam: {fifo} holds no readable video frames"), line
    assert "output written" not in stdout and not out.exists()


def test_a_damaged_stretch_mid_clip_is_a_warning_with_the_frame_and_the_rest_plays(tmp_path):
    src = tmp_path / "clip.mp4"
    assert cli.main(["run", "--source", "demo", "--size", "128x72", "--sink", f"file:{src}"]) == 0
    data = bytearray(src.read_bytes())
    total = int(subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries", "stream=nb_read_frames",
                                "-of", "csv=p=0", str(src)], capture_output=True, text=True).stdout.strip() or 0)
    # Random bytes over the middle of the file, as a bad sector or a broken download leaves them.
    mid = len(data) // 2
    data[mid:mid + 3000] = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    bad = tmp_path / "damaged.mp4"
    bad.write_bytes(bytes(data))
    out = tmp_path / "frames"
    rc, stdout, err = run_cli("run", "--source", f"file:{bad}", "--sink", f"file:{out}/")
    assert rc == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("stylecam: warning: ")]
    assert len(warnings) == 1, err
    assert warnings[0].startswith(f"stylecam: warning: {bad}: frame ")
    assert f"of {total} cannot be decoded (damaged data); skipped" in warnings[0]
    frames = len(list(out.glob("frame_*.png")))
    assert total - 10 <= frames < total  # the run went on to the end, past the damage


# ---- style files that cannot hurt ---------------------------------------------------------------


@pytest.fixture
def hostile_styles(tmp_path):
    """A user style folder holding one good style and every kind of bad file."""
    config = tmp_path / "config"
    folder = config / "stylecam" / "styles"
    folder.mkdir(parents=True)
    (folder / "good.toml").write_text('[[style]]\nname = "my-toon"\nlabel = "My \\u001b[31mtoon\\u001b[0m"\n'
                                      'description = "bold\\u202e lines\\u0007"\nparams = { effect = "toon" }\n')
    (folder / "deep.toml").write_text("x = " + "[" * 500 + "]" * 500 + "\n")
    (folder / "wrongtype.toml").write_text('[[style]]\nname = "bad"\nbackend = ["classic"]\n')
    (folder / "unknown.toml").write_text('[[style]]\nname = "odd"\ncolour = "red"\n')
    (folder / "big.toml").write_text("# " + "x" * MAX_FILE_BYTES + "\n")
    os.mkfifo(folder / "pipe.toml")
    (folder / "zero.toml").symlink_to("/dev/zero")
    (folder / "dir.toml").mkdir()
    (folder / "oil.toml").write_text('[[style]]\nname = "oil"\nlabel = "My oil"\nparams = { effect = "oil" }\n')
    return config, folder


BAD = {"deep.toml": "not valid TOML (nested too deeply)",
       "wrongtype.toml": "key 'backend' must be a string, got an array",
       "unknown.toml": "has unknown key 'colour'",
       "big.toml": f"is {MAX_FILE_BYTES + 3:,} bytes; a style file may be at most {MAX_FILE_BYTES:,}",
       "pipe.toml": "it is a named pipe, not a regular file",
       "zero.toml": "it is a device, not a regular file",
       "dir.toml": "it is a folder, not a regular file"}


def test_two_style_files_with_one_name_say_which_wins(tmp_path):
    from stylecam.core.styles import load_styles

    folder = tmp_path / "styles"
    folder.mkdir()
    for name, label in (("a.toml", "First"), ("b.toml", "Second")):
        (folder / name).write_text(f'[[style]]\nname = "my-toon"\nbackend = "classic"\nlabel = "{label}"\n'
                                   'params = { effect = "toon" }\n')
    styles, warnings = load_styles([folder])
    assert styles["my-toon"].label == "Second"  # files are read in name order: the later one wins
    assert warnings == [f"style file {folder / 'b.toml'}: style 'my-toon' replaces the one of that name in "
                        f"{folder / 'a.toml'}"]


def test_every_bad_style_file_is_one_warning_naming_it_and_the_other_styles_work(hostile_styles, tmp_path):
    config, folder = hostile_styles
    env = dict(os.environ, XDG_CONFIG_HOME=str(config))
    rc, out, err = run_cli("styles", env=env, timeout=30)  # a pipe or /dev/zero would hang or eat memory
    assert rc == 0, err
    warnings = err.strip().splitlines()
    assert len(warnings) == len(BAD) + 1, warnings
    for name, why in BAD.items():
        [line] = [w for w in warnings if f"{folder / name}:" in w]
        assert line.startswith(f"stylecam: warning: skipped style file {folder / name}: ") and why in line, line
    [shadow] = [w for w in warnings if "oil.toml" in w]
    assert shadow == (f"stylecam: warning: style file {folder / 'oil.toml'}: style 'oil' replaces the built-in "
                      "style of that name")
    # The good style is listed with its control characters gone; no escape reaches the terminal.
    assert "my-toon" in out and "My toon - bold lines" in out and "\x1b" not in out + err and "\u202e" not in out
    assert "My oil" in out and "toon" in out  # built-ins still there
    # ... and it runs.
    frames = tmp_path / "frames"
    rc, _, err = run_cli("run", "--style", "my-toon", "--source", "pattern", "--size", "64x48", "--frames", "2",
                         "--sink", f"file:{frames}/", env=env)
    assert rc == 0 and len(list(frames.glob("*.png"))) == 2, err


def test_too_many_style_files_are_capped_with_one_warning(tmp_path, monkeypatch):
    from stylecam.core import styles as styles_module

    folder = tmp_path / "styles"
    folder.mkdir()
    for i in range(12):
        (folder / f"s{i:02d}.toml").write_text(f'[[style]]\nname = "s{i:02d}"\nparams = {{ effect = "toon" }}\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "none"))
    monkeypatch.setattr(styles_module, "MAX_FILES", 10)
    styles, warnings = load_styles([folder])
    assert warnings == ["12 style files found; only the first 10 are read"]
    assert "s09" in styles and "s10" not in styles
