"""The CLI's defaults do the obvious thing (issue 20): a run with nothing to do says how, a run
without a sink says what it does, a clip feeding a live sink plays at its own speed and loops,
bad input is exit 2, decoders do not print over us, a rounded size is said once, a file keeps
every frame, bench shows progress and doctor fails when a check fails."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import threading
import time
import urllib.request

import cv2
import numpy as np

from stylecam.core import cli, doctor
from stylecam.core.runner import Runner
from stylecam.core.sinks import FileSink, NullSink
from stylecam.core.sources import PatternSource, demo_clip_path

from clips import count_frames


def run_cli(*args, timeout=120):
    p = subprocess.run([sys.executable, "-m", "stylecam.core", *args], capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def test_run_with_nothing_to_do_prints_usage_with_an_example():
    rc, out, err = run_cli("run", timeout=60)
    assert rc == 2
    assert err.startswith("usage: stylecam run")
    assert "stylecam run --source demo --style oil --sink file:demo-oil.mp4" in err
    # The example it prints works as printed (a few frames of it).
    example = next(line for line in err.splitlines() if "--sink file:" in line).split("#")[0]
    argv = shlex.split(example)[1:]
    assert argv[:3] == ["run", "--source", "demo"]


def test_run_without_sink_says_what_it_does(tmp_path):
    rc, out, err = run_cli("run", "--source", "demo", "--frames", "3")
    assert rc == 0, err
    assert "no --sink given: painting the demo clip in style oil and discarding the frames" in err
    assert "3 frames" in out


def test_run_without_source_paints_the_pattern(tmp_path):
    out_file = tmp_path / "p.mp4"
    rc, out, err = run_cli("run", "--sink", f"file:{out_file}", "--frames", "3", "--size", "160x120")
    assert rc == 0, err
    assert count_frames(out_file) == 3


class _MjpegClient(threading.Thread):
    """Reads an MJPEG stream and notes when each JPEG arrived."""

    def __init__(self, url):
        super().__init__(daemon=True)
        self.url = url
        self.times: list[float] = []

    def run(self):
        try:
            with urllib.request.urlopen(self.url, timeout=10) as reply:
                buf = b""
                while True:
                    chunk = reply.read1(65536)
                    if not chunk:
                        return
                    buf += chunk
                    while True:
                        end = buf.find(b"\xff\xd9")
                        if end < 0:
                            break
                        self.times.append(time.perf_counter())
                        buf = buf[end + 2:]
        except OSError:
            return


def test_demo_to_a_live_sink_plays_at_the_clip_rate_and_loops():
    cap = cv2.VideoCapture(demo_clip_path())
    clip_fps = cap.get(cv2.CAP_PROP_FPS)
    clip_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    frames = clip_frames + 30  # more than the clip holds: only a loop gives them
    proc = subprocess.Popen([sys.executable, "-m", "stylecam.core", "run", "--source", "demo", "--sink", "mjpeg:0",
                             "--style", "toon", "--size", "320x180", "--frames", str(frames)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/stream\.mjpg", line).group(0)
        client = _MjpegClient(url)
        client.start()
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    client.join(5)
    assert proc.returncode == 0, err
    assert "plays at its own speed" in err and "loops" in err
    assert f"{frames} frames" in out and "none dropped" in out
    # The rate a viewer sees: the clip's own, within 10 % (not the ~50+ fps the file decodes at).
    times = client.times
    assert len(times) >= frames - 10
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert abs(rate - clip_fps) <= 0.1 * clip_fps, (rate, clip_fps)
    fps_out = float(re.search(r"([\d.]+) fps out", out).group(1))
    assert abs(fps_out - clip_fps) <= 0.1 * clip_fps, (fps_out, clip_fps)


def test_a_missing_input_file_is_bad_input_exit_2(tmp_path):
    rc, out, err = run_cli("run", "--source", f"file:{tmp_path / 'nope.mp4'}", "--sink", "null")
    assert rc == 2
    assert err.strip() == f"stylecam: error: video file not found: {tmp_path / 'nope.mp4'}"


def test_a_corrupt_file_is_one_line_of_ours_and_no_decoder_line(tmp_path):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00" * 4096)
    rc, out, err = run_cli("run", "--source", f"file:{bad}", "--sink", "null")
    assert rc == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [f"stylecam: cannot read {bad} as video (unsupported or corrupt file)"], err
    assert "moov" not in err and "@ 0x" not in err


def test_an_odd_size_for_a_video_file_is_said_once(tmp_path):
    out_file = tmp_path / "odd.mp4"
    rc, out, err = run_cli("run", "--source", "demo", "--sink", f"file:{out_file}", "--sink", "null",
                           "--size", "161x121", "--frames", "3")
    assert rc == 0, err
    notes = [line for line in err.splitlines() if "161x121" in line]
    assert notes == [f"stylecam: note: size 161x121 becomes 160x120: the video codec of {out_file} needs even sides"]
    cap = cv2.VideoCapture(str(out_file))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (160, 120)
    cap.release()
    # A PNG folder keeps any size: nothing is rounded, nothing said.
    rc, out, err = run_cli("run", "--source", "demo", "--sink", f"file:{tmp_path / 'png'}/", "--size", "161x121",
                           "--frames", "1")
    assert rc == 0 and "becomes" not in err
    assert cv2.imread(str(next((tmp_path / "png").glob("*.png")))).shape == (121, 161, 3)


class _SlowBackend:
    """Copies frames, slower than the source sends them (a stylizer that cannot keep up)."""

    name = "slow"
    batch_size = 1
    max_inflight = 1

    def set_style(self, style):
        pass

    def submit(self, images):
        time.sleep(0.03 * len(images))
        return [np.ascontiguousarray(i) for i in images]

    def collect(self, ticket):
        return ticket

    def process(self, images):
        return self.collect(self.submit(images))

    def close(self):
        pass


def test_frames_n_from_a_live_source_to_a_file_writes_n(tmp_path):
    n = 40
    # A live source at 100 fps into a stylizer that does ~33: a live-only run drops frames ...
    runner = Runner(PatternSource((64, 48), fps=100.0), _SlowBackend(), [NullSink()], max_frames=n)
    summary = runner.run()
    assert summary["dropped"] > 0 and summary["frames_out"] + summary["dropped"] == n
    line = cli.format_summary(summary, "toon", "null", live_outputs=False)
    assert f"{summary['dropped']} frames dropped" in line
    # ... a file keeps every one of the N.
    path = tmp_path / "live.avi"
    runner = Runner(PatternSource((64, 48), fps=100.0), _SlowBackend(), [FileSink(str(path))], max_frames=n)
    summary = runner.run()
    assert summary["dropped"] == 0 and summary["frames_out"] == n
    assert count_frames(path) == n
    assert "dropped" not in cli.format_summary(summary, "toon", "file", live_outputs=False)


def test_bench_shows_progress_and_a_line_per_configuration():
    rc, out, err = run_cli("bench", "--style", "toon", "--size", "160x120", "--frames", "4", "--batch", "1")
    assert rc == 0, err
    assert "stylecam bench: 1 classic style(s) x batch 1 at 160x120, 4 frames each" in err
    assert re.search(r"toon batch 1: +\d+%\|", err), err  # the tqdm bar
    assert re.search(r"^classic toon 160x120 batch 1: [\d.]+ fps \(p50 [\d.]+ ms", out, re.M), out


def test_doctor_exits_1_when_a_check_fails(capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    rc = cli.main(["doctor", "--only", "screen"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "[ok  ] default" in out and "[FAIL] screen" in out
    assert out.splitlines()[-1] == ("result: NOT ready: screen failed (see the fix above); classic styles to "
                                    "a file or MJPEG still work")


def test_doctor_commands_are_complete(capsys):
    """Every `stylecam ...` command the doctor prints parses as it is; the others name real files."""
    texts = [doctor.check_models().fix or "", doctor.gpu_fix("Linux"), doctor.virtualcam_fix("x", "Linux",
             {"loaded": False, "modules_loadable": True})]
    assert doctor.MODELS_PULL_COMMAND in texts[0]
    commands = [c for t in texts for c in re.findall(r"`([^`]+)`", t)]
    stylecam_commands = [c for c in commands if c.startswith("stylecam ")]
    assert "stylecam models pull sd-turbo" in stylecam_commands
    parser = cli.build_parser()
    for command in stylecam_commands:
        parser.parse_args(shlex.split(command)[1:])  # raises UsageError if incomplete
    assert doctor.CUDA_TORCH_COMMAND in texts[1]
    from pathlib import Path

    assert (Path(__file__).resolve().parents[1] / "installer" / "setup_venv.sh").is_file()


def test_virtualcam_fix_for_the_app_names_no_flags():
    text = doctor.virtualcam_fix("no device", "Linux", {"loaded": False, "modules_loadable": True}, audience="app")
    assert "--" not in text.replace(" -- ", "") and "Output > MJPEG stream" in text
    assert doctor.MODPROBE_LINE in text
    for system in ("Windows", "Darwin"):
        assert not re.search(r"--\w|\w+:\w+=", doctor.virtualcam_fix("x", system, audience="app"))
