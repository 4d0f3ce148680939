"""Recordings that survive any stop: a real `stylecam run` writing an MP4 and a PNG folder is
stopped by SIGTERM, SIGHUP, SIGINT, SIGKILL, and by a disk that another process fills up. The
MP4 must play (ffprobe and OpenCV) and hold at least all but the last second of the frames the
run had written; the PNG folder never holds a half-written frame."""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys

import cv2
import pytest

from clips import count_frames
from reliability_helpers import figures, wait_until  # noqa: F401

FPS = 30


def _stylecam(*args, preexec_fn=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stylecam.core", "run", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn)


def _record(tmp_path, *extra, preexec_fn=None, video=None) -> tuple[subprocess.Popen, str, str]:
    """A live 30 fps pattern recorded to an MP4 and a PNG folder; returns (process, mp4, folder)."""
    video = str(video or tmp_path / "rec.mp4")
    folder = str(tmp_path / "frames") + "/"
    proc = _stylecam("--source", "pattern", "--size", "160x120", "--fps", str(FPS), "--style", "toon",
                     "--sink", f"file:{video}", "--sink", f"file:{folder}", *extra, preexec_fn=preexec_fn)
    return proc, video, folder


def ffprobe_frames(path: str) -> int:
    """Frames ffprobe decodes (0 for a file it cannot read at all)."""
    p = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                        "stream=nb_read_frames,codec_name", "-of", "csv=p=0", path],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"(\w+),(\d+)", p.stdout)
    return int(m.group(2)) if m and p.returncode == 0 else 0


def _pngs(folder: str) -> list[str]:
    return sorted(f for f in os.listdir(folder) if f.startswith("frame_"))


def _wait_frames(folder: str, n: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    ok = wait_until(lambda: os.path.isdir(folder) and len(_pngs(folder)) >= n or proc.poll() is not None,
                    timeout, step=0.05)
    assert ok and proc.poll() is None, proc.stderr.read() if proc.poll() is not None else "too slow"


needs_ffprobe = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe is not installed")


@needs_ffprobe
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_stop_signal_finishes_the_recording(tmp_path, sig):
    proc, video, folder = _record(tmp_path)
    _wait_frames(folder, 45, proc)
    proc.send_signal(getattr(signal, sig))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"stylecam: stopped by {sig}; outputs finished" in err and "Traceback" not in err
    frames = int(re.search(r"stylecam: (\d+) frames", out).group(1))
    # Every frame the run put out is in both outputs, and the video plays all of them.
    assert len(_pngs(folder)) == frames >= 45
    assert ffprobe_frames(video) == count_frames(video) == frames
    assert f"output written to {video}" in out


@needs_ffprobe
def test_sigkill_leaves_a_playable_video_with_all_but_the_last_second(tmp_path, figures):
    proc, video, folder = _record(tmp_path)
    _wait_frames(folder, 100, proc)
    proc.kill()
    proc.communicate(timeout=30)
    written = len(_pngs(folder))  # the PNG folder gets each frame right after the video
    played = ffprobe_frames(video)
    assert played == count_frames(video)
    assert written - FPS - 1 <= played <= written, (played, written)
    # No half-written frame passes for one: every PNG in the folder decodes whole.
    for name in _pngs(folder)[-3:]:
        assert cv2.imread(os.path.join(folder, name)) is not None
    assert all(not f.endswith(".png") or f.startswith("frame_") for f in os.listdir(folder))
    figures.update(frames_written=written, frames_playable=played)


# ---- a disk filled by another process --------------------------------------------------------


@pytest.fixture(params=["tmpfs", "file-size-limit"])
def small_disk(request, tmp_path):
    """A real 2 MiB tmpfs where mounting works (root, as on the build machines and CI), else None,
    and None for the second run: the caller then limits the file size of the child instead (a
    real EFBIG write error). Never a skip: one of the two always runs."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = False
    if request.param == "tmpfs" and os.geteuid() == 0 and shutil.which("mount"):
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)],
                                 capture_output=True).returncode == 0
    try:
        yield folder if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def _file_size_limit():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # ignored stays ignored across exec: EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))


@needs_ffprobe
def test_a_disk_filled_by_another_process_stops_the_video_at_a_fragment_boundary(tmp_path, small_disk, figures):
    if small_disk is not None:
        video = small_disk / "rec.mp4"
        proc, video, folder = _record(tmp_path, "--frames", "240", video=video)
        _wait_frames(folder, 60, proc)
        # Another program takes all the room that is left.
        filler = subprocess.run(["dd", "if=/dev/urandom", f"of={small_disk}/filler", "bs=64k"],
                                capture_output=True, text=True, timeout=60)
        assert "No space left on device" in filler.stderr
        how = "tmpfs"
    else:  # no mount (or the second run): the kernel refuses writes past 100 KB (EFBIG), as a quota would
        proc, video, folder = _record(tmp_path, "--frames", "240", preexec_fn=_file_size_limit)
        how = "RLIMIT_FSIZE"
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    m = re.search(rf"output file:{re.escape(str(video))} failed: disk full writing {re.escape(str(video))} at "
                  r"frame (\d+): the video keeps its first ([\d.]+) s \((\d+) frames\), all playable; free some "
                  r"space or write elsewhere; it is switched off; the other outputs go on", err)
    assert m, err
    failed_at, seconds, kept = int(m.group(1)), float(m.group(2)), int(m.group(3))
    assert len(_pngs(folder)) == 240  # the other output got every frame
    assert kept >= failed_at - FPS - 1 and abs(seconds - kept / FPS) < 0.06
    assert ffprobe_frames(str(video)) == count_frames(str(video)) == kept > 0
    figures.update(how=how, failed_at=failed_at, kept=kept)


@needs_ffprobe
def test_with_only_the_file_output_a_full_disk_ends_the_run_with_one_line(tmp_path):
    proc = _stylecam("--source", "pattern", "--size", "160x120", "--fps", "30", "--sink", f"file:{tmp_path}/o.mp4",
                     preexec_fn=_file_size_limit)
    out, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    # The output's failure as it happens, then why the run ends: nothing else.
    assert proc.returncode == 1 and len(lines) == 2, err
    assert lines[0].startswith(f"stylecam: warning: output file:{tmp_path}/o.mp4 failed: disk full writing ")
    assert lines[1].startswith(f"stylecam: no output works any more (file:{tmp_path}/o.mp4): ")
    assert "the video keeps its first" in lines[1]
    kept = int(re.search(r"\((\d+) frames\)", lines[1]).group(1))
    assert ffprobe_frames(f"{tmp_path}/o.mp4") == kept > 0
