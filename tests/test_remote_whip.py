"""A third-party WHIP client pushes to ``stylecam serve``: FFmpeg's own WHIP muxer (libavformat
8, the ``-f whip`` of the ``ffmpeg`` command), driven through PyAV, whose wheels bundle it.

What OBS's WHIP output does, by another implementation than ours: H.264 over WebRTC with
FFmpeg's ICE, DTLS (GnuTLS) and SRTP, signalling by one POST with a bearer token, a DELETE at
the end. It only sends, so the painted picture goes to the server's own ``--sink``.
"""

from __future__ import annotations

import datetime
import fractions
import json
import time
import urllib.request

import pytest

av = pytest.importorskip("av")
pytest.importorskip("aiortc")

from remote_helpers import Server, demo_frames, mad, saturation  # noqa: E402

from stylecam.core.styles import load_styles  # noqa: E402
from stylecam.core.stylize.classic import ClassicBackend  # noqa: E402

STYLES, _ = load_styles()

TOKEN = "whip-token-0123456789abcdef"


def needs_whip():
    if "whip" not in av.formats_available:
        pytest.skip("this PyAV's FFmpeg has no WHIP muxer (FFmpeg 8 or newer has)")


def p256_certificate(folder):
    """A self-signed ECDSA P-256 certificate and key (PEM) for the client's DTLS. aiortc offers
    only ECDHE-ECDSA cipher suites; the certificate FFmpeg makes for itself does not fit them."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "whip-client")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=7)).sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


def push(url: str, frames, *, token: str, cert: tuple[str, str], fps: float = 30.0) -> None:
    """Push ``frames`` to ``url`` with FFmpeg's WHIP muxer, as ``ffmpeg -re ... -f whip URL`` does."""
    options = {"authorization": token, "cert_file": cert[0], "key_file": cert[1], "handshake_timeout": "20000"}
    container = av.open(url, mode="w", format="whip", options=options)
    try:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        # WHIP carries H.264 without B-frames; a key frame every second.
        stream.options = {"profile": "baseline", "tune": "zerolatency", "preset": "ultrafast", "bf": "0",
                          "g": str(int(fps))}
        t0 = time.perf_counter()
        for i, image in enumerate(frames):
            delay = t0 + i / fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, fractions.Fraction(1, int(fps))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        time.sleep(1.0)  # the last frames reach the server before the DELETE
    finally:
        container.close()


def sessions(server, token: str) -> int:
    request = urllib.request.Request(server.base + "/status", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.load(resp)["sessions"]


def test_ffmpeg_whip_pushes_a_clip_and_the_servers_output_gets_it_painted(tmp_path):
    import cv2

    needs_whip()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    cert = p256_certificate(tmp_path)
    clip = demo_frames(20)
    frames = [clip[i % len(clip)] for i in range(60)]
    out = tmp_path / "frames"
    with Server("--style", "oil", "--token-file", str(token_file), "--sink", f"file:{out}/") as server:
        with pytest.raises(av.error.FFmpegError):  # a wrong token: FFmpeg is refused (401)
            push(server.url + "?style=sketch", frames[:5], token="wrong-token-9876543210fedcba", cert=cert)
        push(server.url + "?style=sketch", frames, token=TOKEN, cert=cert)
        # FFmpeg ended its session with a DELETE (the idle timeout would take 20 s).
        deadline = time.monotonic() + 5
        while sessions(server, TOKEN) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sessions(server, TOKEN) == 0
    assert "missing or wrong token" in server.stderr
    written = sorted(out.glob("*.png"))
    assert len(written) >= 20, len(written)
    sketch = ClassicBackend(workers=1)
    sketch.set_style(STYLES["sketch"])
    try:
        upright = sketch.process(clip)
        sketch.reset_temporal()
        upside_down = sketch.process([f[::-1].copy() for f in clip])
    finally:
        sketch.close()
    colour = saturation(frames[0])
    for path in written[len(written) // 2:]:
        img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        assert img.shape == frames[0].shape
        assert saturation(img) < 0.5 * colour  # painted as the pencil sketch the URL asked for
        # and it is the pushed clip painted: nearer its sketch than the sketch of another picture
        assert min(mad(img, r) for r in upright) < 0.8 * min(mad(img, r) for r in upside_down)
