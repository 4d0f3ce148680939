"""Shared fixtures: a real X screen (Xvfb). The real clips: tests/clips.py (``clip_path``)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest



@pytest.fixture(scope="session")
def xvfb_display():
    """A real X screen (1280x720, depth 24 as mss needs). Sets DISPLAY for the session.

    Uses -displayfd so parallel runs never fight over a display number.
    """
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x720x24",
                             "-nolisten", "tcp", "-ac"], pass_fds=(write_fd,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        number = f.readline().strip()
    if not number:
        proc.kill()
        pytest.fail("Xvfb did not report a display number")
    display = f":{number}"
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = display
    try:
        yield display
    finally:
        if old is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = old
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module: tiny models cost more in threads than they gain."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and an empty hub cache of the test's own; returns that cache's folder."""
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    return cache
