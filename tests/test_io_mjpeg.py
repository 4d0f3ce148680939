"""The MJPEG sink read back by real clients: OpenCV's VideoCapture, ffmpeg, raw HTTP."""

from __future__ import annotations

import http.client
import shutil
import socket
import subprocess
import threading
import time

import cv2
import numpy as np
import pytest

from stylecam.core.frames import Frame
from stylecam.core.sinks import MjpegSink, SinkError, open_sink

W, H = 96, 64
#: Flat colours with big, distinct steps: each frame is recognisable after JPEG.
PALETTE = [(230, 30, 30), (30, 200, 40), (40, 60, 220), (240, 220, 30), (200, 40, 200), (20, 200, 210)]


def frame_image(i: int) -> np.ndarray:
    img = np.empty((H, W, 3), np.uint8)
    img[:] = PALETTE[i % len(PALETTE)]
    img[: H // 2, : W // 2] = 255 - np.array(PALETTE[i % len(PALETTE)], np.uint8)  # a corner: orientation
    return img


def which_frame(rgb: np.ndarray, rows: int = H) -> int:
    """The palette index a decoded frame shows (judged on its first ``rows`` rows); asserts it
    matches that frame within JPEG error."""
    errors = [np.abs(rgb[:rows].astype(int) - frame_image(i)[:rows]).mean() for i in range(len(PALETTE))]
    best = int(np.argmin(errors))
    assert errors[best] < 4, f"decoded frame matches nothing sent (mean error {errors[best]:.1f})"
    return best


class Feeder:
    """Writes frame i = palette colour i to the sink at ``fps``, from its own thread, and times each write."""

    def __init__(self, sink, fps=25.0, image=frame_image):
        self.sink, self.period, self.image = sink, 1.0 / fps, image
        self.write_times: list[float] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        i = 0
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                self.sink.write(Frame(self.image(i), i))
            except BaseException as e:
                self.errors.append(e)
                return
            self.write_times.append(time.perf_counter() - t0)
            i += 1
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(2)


@pytest.fixture
def sink():
    s = open_sink("mjpeg:0")
    try:
        yield s
    finally:
        s.close()


def _get(sink, path, host=None):
    conn = http.client.HTTPConnection("127.0.0.1", sink.port, timeout=5)
    headers = {"Host": host} if host else {}
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    body = resp.read(2000) if resp.status != 200 or "multipart" not in resp.getheader("Content-Type", "") else b""
    conn.close()
    return resp.status, resp.getheader("Content-Type"), body


def test_opencv_reads_the_stream_and_frames_match_what_was_sent(sink):
    assert sink.url == f"http://127.0.0.1:{sink.port}/stream.mjpg" and sink.port > 0
    with Feeder(sink):
        caps = [cv2.VideoCapture(sink.url), cv2.VideoCapture(sink.url)]  # two clients at once
        try:
            seen = [[], []]
            for _ in range(6):
                for cap, got in zip(caps, seen):
                    ok, bgr = cap.read()
                    assert ok and bgr.shape == (H, W, 3)
                    got.append(which_frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
        finally:
            for cap in caps:
                cap.release()
    for got in seen:
        steps = [(b - a) % len(PALETTE) for a, b in zip(got, got[1:])]
        assert all(s >= 1 for s in steps), got  # fresh frames, in order, never a repeat
    assert sink.frames_written >= 6


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (apt-get install ffmpeg)")
def test_ffmpeg_reads_the_stream(sink):
    with Feeder(sink):
        p = subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "mpjpeg", "-i", sink.url,
                            "-frames:v", "3", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                           capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr.decode()[-500:]
    frames = np.frombuffer(p.stdout, np.uint8).reshape(-1, H, W, 3)
    assert len(frames) == 3
    for f in frames:
        which_frame(f)


def test_index_page_404_and_host_guard(sink):
    status, ctype, body = _get(sink, "/")
    assert status == 200 and ctype.startswith("text/html")
    assert b'<img src="/stream.mjpg"' in body and sink.url.encode() in body
    assert _get(sink, "/?x=1")[0] == 200
    for path in ("/stream.mjpeg", "/etc/passwd", "/../stream.mjpg", "/index.html"):
        assert _get(sink, path)[0] == 404, path
    # DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends its own Host.
    for host in ("evil.example", "evil.example:%d" % sink.port, "localhost.evil.example", "192.168.1.5"):
        assert _get(sink, "/stream.mjpg", host=host)[0] == 403, host
        assert _get(sink, "/", host=host)[0] == 403, host
    for host in ("localhost", "localhost:%d" % sink.port, "127.0.0.1:%d" % sink.port, "[::1]:8090"):
        assert _get(sink, "/", host=host)[0] == 200, host


def test_binds_loopback_only_by_default(sink):
    assert sink._server.server_address[0] == "127.0.0.1"
    with pytest.raises(SinkError, match="in use.*mjpeg:0"):
        open_sink(f"mjpeg:{sink.port}")
    with pytest.raises(ValueError, match="unknown mjpeg option"):
        open_sink("mjpeg:80x")


def _read_until_frames(sock, n, limit=5.0):
    data, deadline = b"", time.monotonic() + limit
    while data.count(b"Content-Type: image/jpeg") < n and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _wait(predicate, limit):
    deadline = time.monotonic() + limit
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def big_frame(i: int) -> np.ndarray:
    """640x480: the top half is frame_image's pattern, the bottom half noise (a large JPEG,
    so a client that stops reading fills its socket buffers within a second)."""
    img = cv2.resize(frame_image(i), (640, 480), interpolation=cv2.INTER_NEAREST)
    img[240:] = np.random.default_rng(i).integers(0, 256, (240, 640, 3), dtype=np.uint8)
    return img


def test_disconnects_and_stalled_clients_never_hold_up_the_stream():
    sink = MjpegSink(0, send_timeout=1.0)
    sink.start()
    feeder = Feeder(sink, fps=30, image=big_frame)
    with feeder:
        # A client that leaves mid-stream, in the middle of a frame.
        quitter = socket.create_connection(("127.0.0.1", sink.port))
        quitter.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert b"multipart/x-mixed-replace" in _read_until_frames(quitter, 1)
        quitter.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        quitter.close()  # RST: the server's next write fails
        assert _wait(lambda: sink.clients == 0, 3)
        # A client that asks and then never reads: its socket buffers fill up.
        staller = socket.socket()
        staller.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        staller.connect(("127.0.0.1", sink.port))
        staller.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert _wait(lambda: sink.clients == 1, 3)
        # Meanwhile a well-behaved client still gets fresh frames promptly.
        cap = cv2.VideoCapture(sink.url)
        got = []
        for _ in range(8):
            ok, bgr = cap.read()
            assert ok and bgr.shape == (480, 640, 3)
            top = cv2.resize(cv2.cvtColor(bgr[:240], cv2.COLOR_BGR2RGB), (W, H // 2), interpolation=cv2.INTER_AREA)
            got.append(which_frame(np.concatenate([top, frame_image(0)[H // 2:]]), rows=H // 2))
        cap.release()
        assert len(set(got)) >= 4
        # The staller's writes time out and the server lets it go; the stream never paused.
        assert _wait(lambda: sink.clients == 0, 6), sink.clients
    assert not feeder.errors
    # The producer never waited on a client: a write is a copy and a notify. (Waiting on the
    # staller would show as writes of ~send_timeout = 1 s; the margin is for a loaded CI box.)
    assert max(feeder.write_times) < 0.5 and np.median(feeder.write_times) < 0.01, feeder.write_times
    second = socket.create_connection(("127.0.0.1", sink.port))
    second.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    second.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert _wait(lambda: sink.clients == 1, 3)
    t0 = time.monotonic()
    sink.close()  # with a client still connected and waiting
    assert time.monotonic() - t0 < 3
    assert sink.clients == 0
    staller.close()
    second.close()
    # The port is free again: a clean shutdown.
    again = MjpegSink(sink.port)
    again.start()
    again.close()
