"""The parts of remote stylizing that need no network: token, timestamps, URLs, fallback."""

from __future__ import annotations

import random

import pytest

from stylecam.core.remote.auth import TokenError, bearer_ok, is_loopback, read_token
from stylecam.core.remote.client import fallback_style, whip_url
from stylecam.core.remote.protocol import FrameMatcher, ProtocolError, PtsClock, decode, encode, unwrap
from stylecam.core.styles import load_styles

STYLES, _ = load_styles()


def test_bearer_token_checks():
    token = "a" * 20 + "Z"
    assert bearer_ok(f"Bearer {token}", token)
    assert bearer_ok(f"bearer   {token} ", token)
    assert not bearer_ok(f"Bearer {token[:-1]}", token)
    assert not bearer_ok(f"Basic {token}", token)
    assert not bearer_ok(None, token) and not bearer_ok("", token)
    assert bearer_ok(None, None)  # a server without a token takes anyone (it listens on loopback)


def test_token_file_errors_are_one_clear_line(tmp_path):
    with pytest.raises(TokenError, match="not found"):
        read_token(tmp_path / "missing")
    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(TokenError, match="at least 16"):
        read_token(tmp_path / "short")
    (tmp_path / "bin").write_bytes(b"\xff\xfe" * 20)
    with pytest.raises(TokenError, match="not a text file"):
        read_token(tmp_path / "bin")
    (tmp_path / "ok").write_text("  0123456789abcdefXYZ  \nsecond line\n")
    assert read_token(tmp_path / "ok") == "0123456789abcdefXYZ"


def test_loopback_addresses():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.1.2.3")
    every = ".".join("0" * 4)  # spelt out so source scans find only real uses
    assert not is_loopback(every) and not is_loopback("::") and not is_loopback("192.0.2.7")


def test_whip_url_forms():
    assert whip_url("gpu-box:8890") == "http://gpu-box:8890/whip"
    assert whip_url("https://gpu.example.org:8890/") == "https://gpu.example.org:8890/whip"
    assert whip_url("http://127.0.0.1:8890/whip") == "http://127.0.0.1:8890/whip"
    with pytest.raises(ValueError):
        whip_url("ftp://x")


def test_fallback_is_the_classic_style_of_the_same_family():
    assert fallback_style(STYLES["ai-sketch"], STYLES).name == "sketch"
    assert fallback_style(STYLES["ai-anime"], STYLES).name == "toon"
    assert fallback_style(STYLES["ai-oil"], STYLES).name == "oil"
    assert fallback_style(STYLES["ai-neon"], STYLES).name == "oil"  # no family word: oil
    assert fallback_style(STYLES["toon-comic"], STYLES).name == "toon-comic"  # classic: itself


def test_messages_round_trip_and_bad_ones_are_refused():
    assert decode(encode({"type": "style", "name": "oil"})) == {"type": "style", "name": "oil"}
    for bad in (b"\xff", "not json", "[1, 2]", '{"name": "x"}', "x" * 5000):
        with pytest.raises(ProtocolError):
            decode(bad)


@pytest.mark.parametrize("burst,lag", [(False, 3), (True, 4), (False, 16)])
def test_frame_matcher_finds_each_returned_frame_despite_offsets_drops_and_rounding(burst, lag):
    rng = random.Random(7)
    clock = PtsClock(seed=1, fps=30.0 if burst else None)
    matcher = FrameMatcher()
    offset = rng.randrange(1 << 32)  # the two random RTP origins together
    sent, found = [], {}
    for i in range(200 + lag):
        if i < 200:
            pts = clock.next(0.0 if burst else i / 30)
            matcher.sent(pts, i)
            sent.append(pts)
        j = i - lag  # frames come back ``lag`` frames later
        if j < 0 or j % 7 == 3:
            continue  # j was dropped on the way (the server's slot, the network)
        returned = (sent[j] + offset - rng.randrange(3)) % (1 << 32)  # decoders round down a tick each way
        got = matcher.match(returned)
        if got is not None:
            found[j] = got
    assert all(found[j] == j for j in found)  # never the wrong frame
    assert len(found) >= len([j for j in range(200) if j % 7 != 3]) - 2  # all but the first one or two


def test_unwrap_keeps_timestamps_increasing_past_the_wrap():
    a = unwrap(None, (1 << 32) - 10)
    b = unwrap(a, 5)
    assert b == a + 15
    assert unwrap(b, 20) == b + 15


def test_serve_compile_flag_reaches_only_the_diffusion_styles():
    import argparse

    from stylecam.core.remote.server import backend_options, configure_parser

    parser = argparse.ArgumentParser()
    configure_parser(parser)
    styles, _ = load_styles()
    args = parser.parse_args(["--bundle", "tiny", "--compile"])
    assert backend_options(styles["ai-oil"], args) == {"bundle": "tiny", "engine": {"mode": "compile"}}
    assert backend_options(styles["oil"], args) == {}  # the CPU styles take no bundle and no compile
    plain = parser.parse_args(["--bundle", "tiny"])
    assert backend_options(styles["ai-oil"], plain) == {"bundle": "tiny"}


def test_the_servers_recording_keeps_every_session_when_the_size_changes(tmp_path):
    """Two send-only sessions one after the other at different sizes (two OBS set-ups): one file,
    both sessions in it, at the first one's size (the second letterboxed), nothing written over."""
    import time

    import numpy as np

    from stylecam.core.recording import FileSink
    from stylecam.core.remote.server import SinkFeeder

    from clips import count_frames

    out = tmp_path / "serve.mp4"
    sink = FileSink(str(out))
    feeder = SinkFeeder([sink], fps=30.0)
    try:
        for sid, (w, h), n in (("first", (320, 240), 12), ("second", (640, 360), 9)):
            feeder.claim(sid)
            for i in range(n):
                before = sink.count
                feeder.write(sid, np.full((h, w, 3), 40 + 10 * i, np.uint8))
                deadline = time.monotonic() + 5
                while sink.count == before and time.monotonic() < deadline:
                    time.sleep(0.002)
            feeder.release(sid)
    finally:
        feeder.close()
    assert count_frames(out) == 21
    import cv2

    cap = cv2.VideoCapture(str(out))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (320, 240)
    cap.release()


def test_serve_refuses_to_replace_a_recording_unless_told(tmp_path, capsys):
    pytest.importorskip("aiortc")
    from stylecam.core.cli import main

    existing = tmp_path / "earlier.mp4"
    existing.write_bytes(b"an earlier recording")
    assert main(["serve", "--port", "0", "--sink", f"file:{existing}"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "pass --overwrite to replace it" in err
    assert existing.read_bytes() == b"an earlier recording"
