"""``stylecam serve``: stylize other machines' video over WebRTC.

HTTP side (aiohttp), WHIP-style:

* ``POST /whip`` with an SDP offer (``Content-Type: application/sdp``, ``Authorization: Bearer
  TOKEN`` when the server has a token; optional query ``style=NAME``, ``depth=N``) -> ``201
  Created``, the SDP answer and ``Location: /whip/<session>``. ``401`` on a missing or wrong
  token, ``503`` with a plain reason when ``--max-sessions`` are running, ``400`` for an unknown
  style or an offer without video.
* ``DELETE /whip/<session>`` ends a session. ``GET /status`` says what the server runs (JSON).

Each session is one RTCPeerConnection: the client's video comes in, goes through the shared
:class:`~.hub.Hub` and, when the client also receives (``sendrecv``), goes back on the same
connection; a client that only sends (OBS's WHIP output) has its painted video written to the
server's own ``--sink`` outputs. A data channel (see :mod:`.protocol`) carries style switches,
pause and the per-session metrics. Sessions that send nothing for ``--idle-timeout`` seconds
are closed.

Safe by default: binds 127.0.0.1; any other address needs ``--token-file`` or the server
refuses to start; the token is compared in constant time and never logged; request bodies are
bounded; ``--tls-cert/--tls-key`` serve HTTPS.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field

from .auth import TokenError, bearer_ok, is_loopback, read_token
from .hub import DEFAULT_DEPTH, MAX_DEPTH, Hub
from .protocol import CHANNEL, METRICS_INTERVAL, ProtocolError, decode, encode, unwrap

log = logging.getLogger(__name__)

#: Largest request body accepted (an SDP offer is a few kilobytes; OBS's about 10).
MAX_BODY = 64 * 1024
DEFAULT_PORT = 8890
DEFAULT_MAX_SESSIONS = 4
#: Seconds without a frame before a session is closed (also the time a new session has to
#: deliver its first frame).
DEFAULT_IDLE_TIMEOUT = 20.0


@dataclass
class ServeConfig:
    bind: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    style: object = None  # the default Style of new sessions
    styles: dict = field(default_factory=dict)
    max_sessions: int = DEFAULT_MAX_SESSIONS
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    sinks: list = field(default_factory=list)
    fps: float = 30.0
    tls: ssl.SSLContext | None = None
    ice_servers: list = field(default_factory=list)


class SinkFeeder:
    """Writes the painted frames of send-only sessions to the server's own outputs, in a thread
    of its own (an encoder or an HTTP client must not hold up the stylizer). The newest
    send-only session is the one shown; a failing output is reported once and switched off."""

    def __init__(self, sinks: list, fps: float):
        self.sinks = list(sinks)
        self.fps = fps
        self.owner: str | None = None
        self._slot: tuple | None = None
        self._cond = threading.Condition()
        self._closed = False
        self._size: tuple[int, int] | None = None
        self._index = 0
        self._thread = threading.Thread(target=self._run, name="stylecam-serve-sinks", daemon=True)
        if self.sinks:
            self._thread.start()

    def claim(self, sid: str) -> None:
        with self._cond:
            self.owner = sid

    def release(self, sid: str) -> None:
        with self._cond:
            if self.owner == sid:
                self.owner = None

    def write(self, sid: str, image) -> None:
        with self._cond:
            if sid != self.owner or self._closed:
                return
            self._slot = image
            self._cond.notify_all()

    def _run(self) -> None:
        from ..frames import Frame, fit

        while True:
            with self._cond:
                while self._slot is None and not self._closed:
                    self._cond.wait(0.5)
                if self._closed:
                    break
                image, self._slot = self._slot, None
            size = (image.shape[1], image.shape[0])
            opening = self._size is None
            if opening:
                self._size = size
            elif size != self._size:
                # The outputs keep the first session's size: reopening a recording at another
                # would start its file again (what was recorded lost), and OBS or a viewer reading
                # the stream keeps one picture size. Another size is letterboxed into it.
                image = fit(image, self._size, mode="contain")
            for sink in list(self.sinks):
                try:
                    if opening:
                        sink.open(self._size, self.fps)
                    sink.write(Frame(image, self._index, time.perf_counter()))
                except Exception as e:
                    log.warning("output %s failed: %s; it is switched off", sink.name, e)
                    print(f"stylecam: warning: output {sink.name} failed: {e}; it is switched off",
                          file=sys.stderr, flush=True)
                    self.sinks.remove(sink)
                    try:
                        sink.close()
                    except Exception:
                        pass
            self._index += 1
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as e:
                log.warning("closing %s failed: %s", sink.name, e)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=10)


class Session:
    """One client: its peer connection, its place in the hub, its return track and channel."""

    def __init__(self, sid: str, pc, receives: bool):
        self.id = sid
        self.pc = pc
        self.receives = receives  # False: a send-only client (OBS); output goes to the sinks
        self.out_track = None
        self.channel = None
        self.tasks: list[asyncio.Task] = []
        self.t_created = time.monotonic()
        self.t_last_frame: float | None = None
        self.closed = False
        self.last_pts: int | None = None
        self.remote = ""


class StylecamServer:
    """The aiohttp application and the sessions; runs in one asyncio loop."""

    def __init__(self, config: ServeConfig, hub: Hub, device: str = ""):
        self.config = config
        self.hub = hub
        self.device = device
        self.sessions: dict[str, Session] = {}
        self.feeder = SinkFeeder(config.sinks, config.fps)
        self.refused = 0
        self._runner = None
        self._reaper: asyncio.Task | None = None
        self.url = ""

    # -- HTTP --------------------------------------------------------------------------------

    def make_app(self):
        from aiohttp import web

        @web.middleware
        async def auth(request, handler):
            if not bearer_ok(request.headers.get("Authorization"), self.config.token):
                self.refused += 1
                # Said without the token (or any part of it): logs are often shared.
                log.warning("refused %s %s from %s: missing or wrong token", request.method, request.path,
                            request.remote)
                return web.Response(status=401, text="missing or wrong token\n",
                                    headers={"WWW-Authenticate": 'Bearer realm="stylecam"'})
            return await handler(request)

        app = web.Application(middlewares=[auth], client_max_size=MAX_BODY)
        app.router.add_post("/whip", self.handle_offer)
        app.router.add_delete("/whip/{sid}", self.handle_delete)
        app.router.add_get("/status", self.handle_status)
        app.router.add_route("OPTIONS", "/whip", self.handle_options)
        return app

    async def handle_options(self, request):
        from aiohttp import web

        return web.Response(status=204, headers={"Accept-Post": "application/sdp"})

    async def handle_status(self, request):
        from aiohttp import web

        from .. import __version__

        return web.json_response({
            "server": "stylecam", "version": __version__, "device": self.device,
            "style": self.config.style.name, "sessions": len(self.sessions),
            "max_sessions": self.config.max_sessions, "hub": self.hub.stats(),
            "styles": sorted(self.config.styles)})

    async def handle_delete(self, request):
        from aiohttp import web

        session = self.sessions.get(request.match_info["sid"])
        if session is None:
            return web.Response(status=404, text="no such session\n")
        await self.close_session(session, "ended by the client")
        return web.Response(status=200)

    async def handle_offer(self, request):
        from aiohttp import web
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
        from aiortc.sdp import SessionDescription

        if request.content_type != "application/sdp":
            return web.Response(status=415, text="send the SDP offer as application/sdp\n")
        if len(self.sessions) >= self.config.max_sessions:
            log.info("refused a session from %s: %d sessions running", request.remote, len(self.sessions))
            return web.Response(status=503, headers={"Retry-After": "10"},
                                text=f"the server is busy: it runs its maximum of {self.config.max_sessions} "
                                     "sessions; try again later\n")
        try:
            offer = await request.text()
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413, text=f"the offer is larger than {MAX_BODY} bytes\n")
        style = self.config.style
        name = request.query.get("style")
        if name:
            style = self.config.styles.get(name)
            if style is None:
                return web.Response(status=400, text=f"unknown style {name!r}; this server has: "
                                    f"{', '.join(sorted(self.config.styles))}\n")
        reason = self.hub.unavailable(style)
        if reason:
            return web.Response(status=400, text=f"style {style.name!r} cannot run on this server: {reason}\n")
        try:
            depth = int(request.query.get("depth", DEFAULT_DEPTH))
        except ValueError:
            return web.Response(status=400, text="depth must be a whole number\n")
        depth = max(1, min(MAX_DEPTH, depth))
        try:
            parsed = SessionDescription.parse(offer)
        except Exception:
            return web.Response(status=400, text="the body is not an SDP offer\n")
        video = [m for m in parsed.media if m.kind == "video"]
        if not video:
            return web.Response(status=400, text="the offer has no video\n")
        receives = video[0].direction in (None, "sendrecv")

        sid = secrets.token_urlsafe(12)
        from .media import tune_aiortc

        tune_aiortc()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self.config.ice_servers or None))
        session = Session(sid, pc, receives)
        session.remote = request.remote or ""
        self.sessions[sid] = session
        loop = asyncio.get_running_loop()

        def deliver(image, tag):  # hub thread
            if session.receives:
                loop.call_soon_threadsafe(self._push, session, image, tag)
            else:
                self.feeder.write(sid, image)

        def notify(message):  # hub thread
            loop.call_soon_threadsafe(self._send, session, message)

        self.hub.add(sid, style, deliver, notify, depth)
        if not receives:
            self.feeder.claim(sid)

        @pc.on("datachannel")
        def on_datachannel(channel):
            if channel.label != CHANNEL:
                return
            session.channel = channel
            self._send(session, {"type": "hello", "session": sid, "style": style.name, "device": self.device})

            @channel.on("message")
            def on_message(text):
                self._on_message(session, text)

        @pc.on("track")
        def on_track(track):
            if track.kind == "video":
                session.tasks.append(asyncio.ensure_future(self._read_video(session, track)))
            else:  # audio from OBS: read and dropped, or aiortc would queue it without bound
                session.tasks.append(asyncio.ensure_future(self._drain(track)))

        @pc.on("connectionstatechange")
        async def on_state():
            if pc.connectionState in ("failed", "closed"):
                await self.close_session(session, f"connection {pc.connectionState}")

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            if receives:
                from .media import FrameQueueTrack

                session.out_track = FrameQueueTrack(depth=4)
                pc.addTrack(session.out_track)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as e:
            await self.close_session(session, f"bad offer: {e}")
            return web.Response(status=400, text=f"cannot answer this offer: {e}\n")
        session.tasks.append(asyncio.ensure_future(self._metrics_loop(session)))
        log.info("session %s from %s: style %s, %s", sid, session.remote, style.name,
                 "stylized video back" if receives else "send-only: to the server's outputs")
        return web.Response(status=201, text=pc.localDescription.sdp, content_type="application/sdp",
                            headers={"Location": f"/whip/{sid}"})

    # -- sessions ----------------------------------------------------------------------------

    async def _read_video(self, session: Session, track) -> None:
        from aiortc.mediastreams import MediaStreamError

        from .media import to_rgb

        loop = asyncio.get_running_loop()
        try:
            while not session.closed:
                frame = await track.recv()
                session.t_last_frame = time.monotonic()
                # Timestamps go back with the frame; unwrapped so they keep increasing for the
                # encoder even when the 32-bit RTP clock wraps.
                session.last_pts = unwrap(session.last_pts, frame.pts)
                image = await loop.run_in_executor(None, to_rgb, frame)
                self.hub.put(session.id, image, session.last_pts)
        except MediaStreamError:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("session %s: reading its video failed", session.id)

    @staticmethod
    async def _drain(track) -> None:
        try:
            while True:
                await track.recv()
        except Exception:
            pass

    def _push(self, session: Session, image, pts) -> None:
        if not session.closed and session.out_track is not None:
            session.out_track.push(image, pts)

    def _send(self, session: Session, message: dict) -> None:
        channel = session.channel
        if channel is not None and channel.readyState == "open" and not session.closed:
            try:
                channel.send(encode(message))
            except Exception:
                log.debug("session %s: sending on the data channel failed", session.id, exc_info=True)

    def _on_message(self, session: Session, text) -> None:
        try:
            message = decode(text)
        except ProtocolError as e:
            self._send(session, {"type": "error", "message": f"ignored a message: {e}"})
            return
        kind = message["type"]
        if kind == "style":
            style = self.config.styles.get(message.get("name"))
            if style is None:
                self._send(session, {"type": "error", "message": f"unknown style {message.get('name')!r}"})
                return
            self.hub.set_style(session.id, style)
        elif kind == "pause":
            self.hub.set_paused(session.id, bool(message.get("paused")))
        else:
            self._send(session, {"type": "error", "message": f"unknown message type {kind!r}"})

    async def _metrics_loop(self, session: Session) -> None:
        while not session.closed:
            await asyncio.sleep(METRICS_INTERVAL)
            stats = self.hub.session_stats(session.id)
            if stats is not None:
                if session.out_track is not None:
                    stats["send_dropped"] = session.out_track.dropped
                self._send(session, {"type": "metrics", **stats})

    async def close_session(self, session: Session, reason: str) -> None:
        if session.closed:
            return
        session.closed = True
        self.sessions.pop(session.id, None)
        self.hub.remove(session.id)
        self.feeder.release(session.id)
        current = asyncio.current_task()
        for task in session.tasks:
            if task is not current:
                task.cancel()
        if session.out_track is not None:
            session.out_track.stop()
        await session.pc.close()
        log.info("session %s closed: %s", session.id, reason)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                last = session.t_last_frame or session.t_created
                if now - last > self.config.idle_timeout:
                    await self.close_session(session, f"no video for {self.config.idle_timeout:g} s")

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> str:
        from aiohttp import web

        self._runner = web.AppRunner(self.make_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.bind, self.config.port, ssl_context=self.config.tls)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        scheme = "https" if self.config.tls else "http"
        shown = f"[{host}]" if ":" in host else host
        self.url = f"{scheme}://{shown}:{port}/whip"
        self._reaper = asyncio.ensure_future(self._reap())
        return self.url

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for session in list(self.sessions.values()):
            await self.close_session(session, "the server stops")
        if self._runner is not None:
            await self._runner.cleanup()
        self.feeder.close()


# -- the command ----------------------------------------------------------------------------


def backend_options(style, args) -> dict:
    """What the server's stylizer for ``style`` is built with: the bundle and, with
    ``--compile``, compile mode, for diffusion styles; nothing for the CPU styles."""
    if style.backend != "diffusion":
        return {}
    opts = {"bundle": args.bundle}
    if args.compile:
        opts["engine"] = {"mode": "compile"}
    return opts


def configure_parser(p) -> None:
    from ..cli_args import positive_float as _positive_float, positive_int as _positive_int, size as _size

    p.add_argument("--bind", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; any other needs --token-file)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    p.add_argument("--token-file", default=None, help="file holding the bearer token clients must send")
    p.add_argument("--style", default=None, help="style of new sessions (default: oil, or the first ai-* "
                                                   "style with --bundle)")
    p.add_argument("--bundle", default=None, help="diffusion model bundle: folder or hub id")
    p.add_argument("--batch", type=_positive_int, default=None, help="frames per stylizer batch")
    p.add_argument("--compile", action="store_true",
                   help="compile the diffusion styles' models for the GPU (as `stylecam run --compile`)")
    p.add_argument("--size", type=_size, default=None, help="engine size WxH for every session "
                                                           "(default: each session's own)")
    p.add_argument("--max-sessions", type=_positive_int, default=DEFAULT_MAX_SESSIONS,
                   help=f"sessions at once (default {DEFAULT_MAX_SESSIONS}); more get 503")
    p.add_argument("--idle-timeout", type=_positive_float, default=DEFAULT_IDLE_TIMEOUT,
                   help=f"close a session that sends no video for this many seconds (default {DEFAULT_IDLE_TIMEOUT:g})")
    p.add_argument("--gather-ms", type=float, default=10.0,
                   help="how long a batch waits for other sessions of its style (default 10)")
    p.add_argument("--sink", action="append", default=None,
                   help="where send-only clients' (OBS WHIP) painted video goes: mjpeg | virtualcam | file:OUT.mp4 ...")
    p.add_argument("--fps", type=_positive_float, default=30.0, help="rate of the --sink outputs (default 30)")
    p.add_argument("--overwrite", action="store_true", help="replace a --sink file or frame folder that exists")
    p.add_argument("--tls-cert", default=None, help="certificate (PEM) for HTTPS signalling")
    p.add_argument("--tls-key", default=None, help="private key (PEM) of --tls-cert")
    p.add_argument("--ice-server", action="append", default=None,
                   help="STUN/TURN server, e.g. turn:user:pass@host:3478?transport=tcp (repeatable)")


def parse_ice_server(text: str):
    """``stun:host:port`` or ``turn[s]:user:password@host:port[?transport=tcp]`` as an
    RTCIceServer. Raises ValueError with the expected form."""
    from aiortc import RTCIceServer

    scheme, sep, rest = text.partition(":")
    if not sep or scheme not in ("stun", "turn", "turns") or not rest:
        raise ValueError(f"ICE server {text!r}: expected stun:HOST:PORT or turn:USER:PASSWORD@HOST:PORT")
    if scheme == "stun":
        return RTCIceServer(urls=text)
    creds, at, where = rest.rpartition("@")
    if not at:
        return RTCIceServer(urls=text)
    user, _, password = creds.partition(":")
    return RTCIceServer(urls=f"{scheme}:{where}", username=user, credential=password)


def _check_bind(bind: str, token: str | None) -> None:
    from ..cli_args import UsageError

    if token is None and not is_loopback(bind):
        raise UsageError(f"--bind {bind} lets other machines connect: give --token-file with a secret token "
                         "(make one with `python -c \"import secrets; print(secrets.token_urlsafe(32))\" > token`), "
                         "or keep the default 127.0.0.1 and use an SSH tunnel")


def command(args) -> int:
    from ..cli_args import UsageError, resolve_style
    from ..runner import start_backend_compiled
    from ..sinks import OutputRefused, SinkError, open_sink
    from ..styles import load_styles
    from ..stylize.base import BackendError

    token = None
    if args.token_file:
        try:
            token = read_token(args.token_file)
        except TokenError as e:
            raise UsageError(str(e)) from None
    _check_bind(args.bind, token)  # before anything heavy: refuse at once
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("give both --tls-cert and --tls-key, or neither")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: expected 0-65535")
    try:
        import aiohttp  # noqa: F401
        import aiortc  # noqa: F401
    except ImportError as e:
        print(f"stylecam: serve needs aiortc and aiohttp ({e}); pip install aiortc aiohttp", file=sys.stderr)
        return 1
    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            tls.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as e:
            raise UsageError(f"cannot use --tls-cert/--tls-key: {e}") from None
    try:
        ice = [parse_ice_server(s) for s in args.ice_server or []]
    except ValueError as e:
        raise UsageError(str(e)) from None
    style_name = args.style
    if style_name is None:
        style_name = None if args.bundle else "oil"
    style = resolve_style(style_name, "diffusion" if args.bundle and args.style is None else None)
    styles, _ = load_styles()
    try:
        sinks = [open_sink(s, fps=args.fps, overwrite=args.overwrite) for s in args.sink or []]
    except ValueError as e:
        raise UsageError(str(e)) from None
    except OutputRefused as e:  # as `run` says it: nothing is replaced by surprise
        raise UsageError(f"{e}; pass --overwrite to replace it") from None
    except SinkError as e:
        print(f"stylecam: {e}", file=sys.stderr)
        return 1

    def make_backend(s):
        def uncompiled(e) -> None:  # the style is served all the same, uncompiled
            print(f"stylecam: warning: --compile failed ({e}); serving {s.name} without it", file=sys.stderr,
                  flush=True)

        return start_backend_compiled(s, args.batch, on_uncompiled=uncompiled, **backend_options(s, args))

    hub = Hub(make_backend, size=args.size, batch_size=args.batch, gather=max(0.0, args.gather_ms) / 1000)
    try:
        hub.start(style)
    except BackendError as e:
        print(f"stylecam: {e}", file=sys.stderr)
        hub.close()
        return 1
    config = ServeConfig(bind=args.bind, port=args.port, token=token, style=style, styles=styles,
                         max_sessions=args.max_sessions, idle_timeout=args.idle_timeout, sinks=sinks,
                         fps=args.fps, tls=tls, ice_servers=ice)
    try:
        return asyncio.run(_serve(config, hub))
    finally:
        hub.close()


def describe_device() -> str:
    """The device diffusion styles run on, without importing torch when nothing has."""
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                return f"{torch.cuda.get_device_name(0)} (CUDA)"
        except Exception:
            pass
        return "CPU"
    return "CPU (classic styles)"


async def _serve(config: ServeConfig, hub: Hub) -> int:
    server = StylecamServer(config, hub, describe_device())
    try:
        url = await server.start()
    except OSError as e:
        print(f"stylecam: cannot listen on {config.bind}:{config.port}: {e.strerror or e}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: Ctrl-C raises KeyboardInterrupt
            pass
    auth = "token required" if config.token else "no token: this machine only"
    print(f"stylecam: serving at {url} (style {config.style.name}, {server.device}, "
          f"up to {config.max_sessions} sessions, {auth})", flush=True)
    for sink in config.sinks:
        if getattr(sink, "url", None):  # the MJPEG server listens from the start (mjpeg:0 too)
            print(f"stylecam: send-only sessions' painted video at {sink.url}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()
    return 0
