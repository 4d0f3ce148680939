"""Remote stylizing with real aiortc peers on loopback: a ``stylecam serve`` subprocess and
:class:`RemoteBackend` (or a hand-made WHIP client) in the test process."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

pytest.importorskip("aiortc")

from remote_helpers import Server, demo_frames, free_port, mad, saturation  # noqa: E402

from stylecam.core.remote.client import RemoteBackend  # noqa: E402
from stylecam.core.styles import load_styles  # noqa: E402
from stylecam.core.stylize.base import BackendError, create_backend  # noqa: E402
from stylecam.core.stylize.classic import ClassicBackend  # noqa: E402

STYLES, _ = load_styles()
TOKEN = "test-token-0123456789abcdef"


def local(style, frames):
    backend = ClassicBackend(workers=1)
    backend.set_style(STYLES[style] if isinstance(style, str) else style)
    try:
        return backend.process(list(frames))
    finally:
        backend.close()


def http(method: str, url: str, body: bytes = b"", token: str | None = None,
         content_type: str = "application/sdp") -> tuple[int, str, dict]:
    req = urllib.request.Request(url, data=body or None, method=method)
    if body:
        req.add_header("Content-Type", content_type)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def make_offer(direction: str = "sendrecv") -> str:
    """A real aiortc offer with one video transceiver."""
    from aiortc import RTCPeerConnection

    from stylecam.core.remote.media import FrameQueueTrack

    async def go():
        pc = RTCPeerConnection()
        pc.addTransceiver(FrameQueueTrack(), direction=direction)
        pc.createDataChannel("stylecam")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    return asyncio.run(go())


def remote(url: str, style: str = "oil", **kw) -> RemoteBackend:
    # Generous waits: a loaded 2-core machine can hold a frame (or the server's heartbeat) for
    # seconds; the tests that are about time set their own.
    kw.setdefault("frame_timeout", 60.0)
    kw.setdefault("stall_timeout", 30.0)
    return create_backend(STYLES[style], server=url, **kw)


def test_round_trip_through_serve_with_the_classic_backend():
    frames = demo_frames(12)
    with Server("--style", "toon-comic") as server:
        backend = remote(server.url, "toon-comic", exact=True)
        try:
            outputs = []
            for i in range(0, len(frames), 4):
                outputs += backend.process(frames[i:i + 4])
            stats = backend.stats()
        finally:
            backend.close()
    assert stats["frames_local"] == 0 and stats["frames_lost"] == 0, stats
    assert stats["out_of_order"] == 0
    reference = local("toon-comic", frames)
    for frame, out, ref in zip(frames, outputs, reference):
        assert out.shape == frame.shape
        # The server painted this very frame as a comic: close to the local painting (the
        # codec both ways costs a few levels), far from the unpainted frame and other frames.
        assert mad(out, ref) < 10, mad(out, ref)
        assert mad(out, ref) < 0.5 * mad(frame, ref), (mad(out, ref), mad(frame, ref))
    assert mad(outputs[0], reference[0]) < mad(outputs[0], reference[-1])
    assert stats["round_trip_p50_ms"] is not None


def test_round_trip_with_a_tiny_diffusion_bundle(tmp_path, monkeypatch):
    from stylecam.core.stylize import bundle as B
    from stylecam.core.stylize.diffusion import DiffusionBackend

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = B.write_tiny_bundle("sd-turbo", tmp_path / "tiny")
    frames = demo_frames(4, size=(64, 64))
    with Server("--bundle", str(folder), "--style", "ai-oil", "--batch", "2") as server:
        backend = remote(server.url, "ai-oil", exact=True)
        try:
            outputs = backend.process(frames[:2]) + backend.process(frames[2:])
            stats = backend.stats()
            status = json.loads(http("GET", server.base + "/status")[1])
        finally:
            backend.close()
    assert stats["frames_local"] == 0 and stats["frames_lost"] == 0, stats
    assert "diffusion" in status["hub"]["backends"]
    ref_backend = DiffusionBackend(bundle=str(folder), batch_size=2)
    ref_backend.set_style(STYLES["ai-oil"])
    try:
        reference = ref_backend.process(frames[:2]) + ref_backend.process(frames[2:])
    finally:
        ref_backend.close()
    for frame, out, ref in zip(frames, outputs, reference):
        assert out.shape == frame.shape
        # Random tiny weights paint something far from the input; the server's painting of
        # the codec-degraded frame is the local painting of the frame, give or take the codec.
        assert mad(out, ref) < 0.5 * mad(frame, ref), (mad(out, ref), mad(frame, ref))


def test_style_switch_over_the_data_channel_applies_within_two_frames():
    frames = demo_frames(24)
    with Server("--style", "oil") as server:
        backend = remote(server.url, exact=True)
        try:
            before = [backend.process([f])[0] for f in frames[:8]]
            backend.set_style(STYLES["sketch"])
            after = [backend.process([f])[0] for f in frames[8:]]
            assert backend.stats()["frames_local"] == 0
        finally:
            backend.close()
    oil_sat = min(saturation(o) for o in before)
    sketch_sat = [saturation(o) for o in after]
    # Pencil on paper is nearly grey; oil keeps the clip's colour.
    is_sketch = [s < 0.5 * oil_sat for s in sketch_sat]
    assert all(is_sketch[2:]), (oil_sat, sketch_sat)
    assert is_sketch.index(True) <= 1


def test_two_sessions_with_one_style_share_batches_and_get_only_their_own_frames_in_order(tmp_path):
    # Sessions share batches where the style keeps nothing from frame to frame: here a user
    # style, oil with the stabilizer off. (With it on, each session's batches are its own:
    # tests/test_remote_streams.py.)
    styles = tmp_path / "config" / "stylecam" / "styles"
    styles.mkdir(parents=True)
    (styles / "flat.toml").write_text('[[style]]\nname = "oil-flat"\nbackend = "classic"\n'
                                      'params = { effect = "oil", radius = 4, steady = 0.0 }\n')
    flat, _ = load_styles([styles])
    flat = flat["oil-flat"]
    frames_a = demo_frames(30)
    frames_b = [f[::-1].copy() for f in frames_a]  # upside down: another picture, same colours
    with Server("--style", "oil-flat", "--batch", "2", "--gather-ms", "300",
                env={"XDG_CONFIG_HOME": str(tmp_path / "config")}) as server:
        a = create_backend(flat, server=server.url, exact=True, frame_timeout=60.0, stall_timeout=30.0)
        b = create_backend(flat, server=server.url, exact=True, frame_timeout=60.0, stall_timeout=30.0)
        results = {}

        def feed(name, backend, frames):
            results[name] = [backend.process([f])[0] for f in frames]

        try:
            threads = [threading.Thread(target=feed, args=("a", a, frames_a)),
                       threading.Thread(target=feed, args=("b", b, frames_b))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            stats_a, stats_b = a.stats(), b.stats()
            status = json.loads(http("GET", server.base + "/status")[1])
        finally:
            a.close()
            b.close()
    assert status["hub"]["shared_batches"] >= 5, status
    assert status["hub"]["max_batch"] == 2
    assert status["hub"]["max_inflight"] == 1  # the classic backend paints one batch at a time
    for stats in (stats_a, stats_b):
        assert stats["frames_local"] == 0 and stats["frames_lost"] == 0 and stats["out_of_order"] == 0, stats
    ref_a, ref_b = local(flat, frames_a), local(flat, frames_b)
    for i in range(len(frames_a)):
        assert mad(results["a"][i], ref_a[i]) < mad(results["a"][i], ref_b[i])
        assert mad(results["b"][i], ref_b[i]) < mad(results["b"][i], ref_a[i])
        if i + 5 < len(frames_a):  # and it is this frame, not a neighbour of it
            assert mad(results["a"][i], ref_a[i]) < mad(results["a"][i], ref_a[i + 5])


def test_a_wrong_token_gets_401_and_is_never_logged(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    wrong = "wrong-token-9876543210fedcba"
    offer = make_offer()
    with Server("--token-file", str(token_file)) as server:
        assert http("POST", server.url, offer.encode())[0] == 401
        status, body, headers = http("POST", server.url, offer.encode(), token=wrong)
        assert status == 401 and headers.get("WWW-Authenticate", "").startswith("Bearer")
        assert http("GET", server.base + "/status", token=wrong)[0] == 401
        status, _, headers = http("POST", server.url, offer.encode(), token=TOKEN)
        assert status == 201 and headers["Location"].startswith("/whip/")
        assert http("DELETE", server.base + headers["Location"], token=TOKEN)[0] == 200
        (tmp_path / "wrong").write_text(wrong)
        with pytest.raises(BackendError, match="refused the token"):
            remote(server.url, token_file=str(tmp_path / "wrong"))
        with pytest.raises(BackendError, match=r"needs a token \(401\); give the file holding it"):
            remote(server.url)  # none given: not "refused", which would send the user to the wrong file
        time.sleep(0.5)
    assert "missing or wrong token" in server.stderr
    assert wrong not in server.stderr and TOKEN not in server.stderr
    assert wrong[:8] not in server.stderr


def test_the_eleventh_session_over_max_sessions_10_gets_503():
    offer = make_offer().encode()
    with Server("--max-sessions", "10") as server:
        locations = []
        for _ in range(10):
            status, _, headers = http("POST", server.url, offer)
            assert status == 201
            locations.append(headers["Location"])
        status, body, headers = http("POST", server.url, offer)
        assert status == 503
        assert "busy" in body and "10 sessions" in body
        assert headers.get("Retry-After")
        assert http("DELETE", server.base + locations[0])[0] == 200
        assert http("POST", server.url, offer)[0] == 201  # a freed place is taken again


def test_serve_bind_all_interfaces_without_a_token_refuses_to_start(tmp_path):
    import subprocess
    import sys

    every = ".".join("0" * 4)  # every interface (spelt out so source scans find only real uses)
    result = subprocess.run([sys.executable, "-m", "stylecam.core", "serve", "--bind", every, "--port", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--token-file" in result.stderr and every in result.stderr
    assert "serving at" not in result.stdout
    short = tmp_path / "short"
    short.write_text("abc")
    result = subprocess.run([sys.executable, "-m", "stylecam.core", "serve", "--bind", every, "--token-file",
                             str(short)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "at least 16" in result.stderr


def test_killing_the_server_falls_back_to_local_and_recovers_when_it_returns():
    port = free_port()
    frames = demo_frames(8)
    events = []
    server = Server("--style", "sketch", "--port", str(port))
    backend = remote(f"http://127.0.0.1:{port}", "sketch", on_event=events.append, stall_timeout=5.0,
                     backoff=(0.5, 2.0))
    try:
        def pump(until, timeout):
            deadline = time.monotonic() + timeout
            i = 0
            while time.monotonic() < deadline:
                out = backend.process([frames[i % len(frames)]])[0]
                assert out.shape == frames[0].shape
                i += 1
                if until():
                    return out
                time.sleep(1 / 20)
            raise AssertionError(f"timed out; events {[e.message for e in events]}, stats {backend.stats()}")

        pump(lambda: backend.stats()["frames_back"] > 10, 60)
        server.kill()
        local_before = backend.stats()["frames_local"]
        pump(lambda: any(e.kind == "remote-lost" for e in events), 30)
        out = pump(lambda: backend.stats()["frames_local"] > local_before + 5, 30)
        assert saturation(out) < 0.5 * saturation(frames[0])  # still a pencil sketch, painted here
        lost = [e for e in events if e.kind == "remote-lost"]
        assert len(lost) == 1 and "painting here with the Pencil sketch style" in lost[0].message
        server = Server("--style", "sketch", "--port", str(port))
        back_before = backend.stats()["frames_back"]
        pump(lambda: any(e.kind == "remote-back" for e in events), 60)
        pump(lambda: backend.stats()["frames_back"] > back_before + 10, 60)
        assert [e.kind for e in events] == ["remote-lost", "remote-back"]
    finally:
        backend.close()
        server.stop()


def test_a_send_only_client_gets_its_painting_on_the_servers_own_outputs(tmp_path):
    """What OBS's WHIP output does: send video, receive nothing; the server's --sink shows it."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from stylecam.core.remote.media import FrameQueueTrack

    frames = demo_frames(20)
    out_dir = tmp_path / "frames"

    async def obs_like(url):
        import aiohttp

        pc = RTCPeerConnection()
        track = FrameQueueTrack(depth=30)
        pc.addTransceiver(track, direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        async with aiohttp.ClientSession() as http_session:
            async with http_session.post(url, data=pc.localDescription.sdp,
                                         headers={"Content-Type": "application/sdp"}) as resp:
                assert resp.status == 201
                answer, location = await resp.text(), resp.headers["Location"]
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            for _ in range(200):
                if pc.connectionState == "connected":
                    break
                await asyncio.sleep(0.05)
            for i in range(60):
                track.push(frames[i % len(frames)], 3000 * i)
                await asyncio.sleep(1 / 30)
            await asyncio.sleep(1.0)
            async with http_session.delete(url.rsplit("/whip", 1)[0] + location) as resp:
                assert resp.status == 200
        await pc.close()

    with Server("--style", "sketch", "--sink", f"file:{out_dir}/") as server:
        asyncio.run(obs_like(server.url))
    written = sorted(out_dir.glob("*.png"))
    assert len(written) >= 20, len(written)
    import cv2

    img = cv2.cvtColor(cv2.imread(str(written[-1])), cv2.COLOR_BGR2RGB)
    assert img.shape == frames[0].shape
    assert saturation(img) < 0.5 * saturation(frames[0])  # painted as a pencil sketch


def test_a_session_that_never_sends_is_closed_after_the_idle_timeout():
    with Server("--idle-timeout", "1.5") as server:
        status, _, _ = http("POST", server.url, make_offer().encode())
        assert status == 201
        assert json.loads(http("GET", server.base + "/status")[1])["sessions"] == 1
        deadline = time.monotonic() + 20
        while json.loads(http("GET", server.base + "/status")[1])["sessions"] and time.monotonic() < deadline:
            time.sleep(0.25)
        assert json.loads(http("GET", server.base + "/status")[1])["sessions"] == 0


def test_bodies_are_bounded_and_must_be_sdp():
    with Server() as server:
        assert http("POST", server.url, b"x" * (128 * 1024))[0] == 413
        assert http("POST", server.url, b"{}", content_type="application/json")[0] == 415
        status, body, _ = http("POST", server.url + "?style=no-such", make_offer().encode())
        assert status == 400 and "unknown style" in body


def test_an_unreachable_server_paints_locally_and_says_so():
    events = []
    port = free_port()  # nothing listens there
    backend = remote(f"http://127.0.0.1:{port}", "ai-anime", on_event=events.append, connect_timeout=3)
    try:
        frame = demo_frames(1)[0]
        out = backend.process([frame])[0]
    finally:
        backend.close()
    assert backend.fallback.name == "toon"
    assert np.array_equal(out, local("toon", [frame])[0])
    assert [e.kind for e in events] == ["remote-lost"]
    assert "cannot be reached" in events[0].message and "Cartoon" in events[0].message


def test_stylecam_run_with_the_remote_backend_writes_every_frame_of_a_file(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "frames"
    with Server("--style", "oil") as server:
        result = subprocess.run([sys.executable, "-m", "stylecam.core", "run", "--source", "demo", "--frames", "20",
                                 "--size", "320x180", "--backend", "remote", "--server", server.url, "--style",
                                 "toon", "--sink", f"file:{out}/"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "round trip p50" in result.stdout and "0 frames painted here" in result.stdout, result.stdout
    assert len(list(out.glob("*.png"))) == 20


def test_remote_options_are_checked(tmp_path):
    from stylecam.core.cli import main

    assert main(["run", "--backend", "remote"]) == 2
    assert main(["run", "--backend", "classic", "--server", "http://127.0.0.1:1"]) == 2
    assert main(["run", "--token-file", str(tmp_path / "t")]) == 2
    assert main(["run", "--server", "http://127.0.0.1:1", "--token-file", str(tmp_path / "missing"),
                 "--frames", "1"]) == 1


def test_doctor_checks_a_configured_server(tmp_path, monkeypatch):
    from stylecam.core import doctor

    token_file, wrong_file = tmp_path / "token", tmp_path / "wrong"
    token_file.write_text(TOKEN)
    wrong_file.write_text("wrong-token-9876543210fedcba")
    monkeypatch.setattr(doctor, "REMOTE_TARGET", {})
    monkeypatch.delenv("STYLECAM_SERVER", raising=False)
    assert doctor.check_remote().status == "info"
    with Server("--token-file", str(token_file)) as server:
        doctor.REMOTE_TARGET.update(server=server.url, token_file=str(token_file))
        check = doctor.check_remote()
        assert check.status == "ok", check
        assert any("there and back" in d for d in check.details)
        doctor.REMOTE_TARGET.update(token_file=str(wrong_file))
        check = doctor.check_remote()
        assert check.status == "fail" and "refused the token" in check.summary
        doctor.REMOTE_TARGET.update(token_file=None)
        check = doctor.check_remote()
        assert check.status == "fail" and "needs a token" in check.summary, check
    doctor.REMOTE_TARGET.update(server=f"http://127.0.0.1:{free_port()}")
    check = doctor.check_remote()
    assert check.status == "fail" and "cannot reach" in check.summary and "stylecam serve" in check.fix


def test_serve_says_where_its_mjpeg_output_is_even_on_a_free_port():
    import urllib.request

    with Server("--sink", "mjpeg:0") as server:
        line = server._lines.get(timeout=10)
        assert "send-only sessions' painted video at http://127.0.0.1:" in line, line
        url = line.split(" at ", 1)[1].strip()
        assert not url.endswith(":0/stream.mjpg")
        with urllib.request.urlopen(url.rsplit("/", 1)[0] + "/", timeout=5) as reply:
            assert reply.status == 200


def test_run_against_a_server_that_never_answers_says_so_in_its_summary(capsys):
    from stylecam.core.cli import main

    port = free_port()  # nothing listens there
    assert main(["run", "--server", f"http://127.0.0.1:{port}", "--style", "toon", "--source", "pattern",
                 "--size", "64x48", "--sink", "null", "--frames", "5"]) == 0
    out, err = capsys.readouterr()
    assert f"remote 127.0.0.1:{port}: no frame came back; 5 frames painted here" in out, out
    assert "None" not in out
    assert err.count("cannot be reached") == 1, err  # said once, not again as a raw log line


def test_the_summary_names_the_style_the_server_painted_with(tmp_path):
    """The server cannot start the AI style asked for (no model there) and paints its own: the
    client's summary says which painted, not the one asked for."""
    import subprocess
    import sys

    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-cache")}
    with Server("--style", "oil", env=env) as server:
        result = subprocess.run([sys.executable, "-m", "stylecam.core", "run", "--server", server.url, "--style",
                                 "ai-oil", "--source", "demo", "--size", "64x48", "--frames", "300", "--sink",
                                 "null"], capture_output=True, text=True, timeout=120, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    assert "style oil (the server's; ai-oil was asked for)" in result.stdout, result.stdout
    # None back at all (nothing listens): every frame was painted here, with the fallback.
    result = subprocess.run([sys.executable, "-m", "stylecam.core", "run", "--server",
                             f"http://127.0.0.1:{free_port()}", "--style", "ai-oil", "--source", "pattern", "--size",
                             "64x48", "--frames", "5", "--sink", "null"], capture_output=True, text=True, timeout=120)
    assert "style oil (painted here: no frame came back from the server)" in result.stdout, result.stdout
