"""Starting a real ``stylecam serve`` subprocess for the remote tests, and frames to send."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from clips import read_clip

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "core" / "data" / "blackswan.mp4"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m stylecam.core serve ARGS`` in a subprocess; ``url`` is what it printed."""

    def __init__(self, *args: str, timeout: float = 60.0, env: dict | None = None):
        self.args = ["--port", "0", *args] if "--port" not in args else list(args)
        cmd = [sys.executable, "-m", "stylecam.core", "serve", *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})}, cwd=REPO)
        self.stderr_lines: list[str] = []
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc.stdout, self._lines), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, None), daemon=True).start()
        deadline = time.monotonic() + timeout
        self.url = None
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if "serving at " in line:
                self.url = line.split("serving at ", 1)[1].split()[0]
                break
        if self.url is None:
            self.stop()
            raise RuntimeError(f"serve did not start: {''.join(self.stderr_lines)[-2000:]}")
        self.base = self.url.rsplit("/whip", 1)[0]

    def _pump(self, stream, into) -> None:
        for line in stream:
            if into is not None:
                into.put(line)
            else:
                self.stderr_lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def demo_frames(count: int, size=(320, 180)) -> list[np.ndarray]:
    """``count`` frames of the bundled clip at ``size``."""
    import cv2

    return [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in read_clip(DEMO, count)]


def saturation(img: np.ndarray) -> float:
    import cv2

    return float(cv2.cvtColor(img, cv2.COLOR_RGB2HSV)[..., 1].mean())


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())
