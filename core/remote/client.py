"""The ``remote`` backend: frames are painted by a ``stylecam serve`` elsewhere.

:class:`RemoteBackend` is a :class:`~..stylize.base.Backend`, so the runner, the CLI and the tray
use it like a local stylizer. Behind it an asyncio loop in a thread of its own keeps one WebRTC
session with the server (see :mod:`.server`): each submitted frame goes out on the video track,
its painted copy comes back on the same connection, and :class:`~.protocol.FrameMatcher` tells
which frame came back.

Two ways to collect:

* **live** (cameras, screens): ``collect`` never waits. Each frame gets its own painted copy if
  it is back already, else the newest painted frame (the stream lags by the round trip, which
  :meth:`RemoteBackend.stats` reports, instead of stalling). The server keeps only the newest
  frames of a session, so a slow link costs frames, never delay.
* **exact** (files): ``collect`` waits for each frame's own painted copy, and the server keeps a
  deeper slot; a frame that does not come back within ``frame_timeout`` is painted locally.

When the server cannot be reached, refuses, or goes silent for ``stall_timeout`` seconds, frames
are painted here with the classic style of the same family (:func:`fallback_style`), an event
says so once, and the session is re-established with backoff (1 s doubling to 30 s); an event
says when the server is back. A refused token or unknown style at start raises
:class:`~..stylize.base.BackendError` instead: no retry can fix them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from ..frames import fit
from ..styles import Style, load_styles
from ..stylize.base import Backend, BackendError
from .auth import TokenError, read_token
from .hub import MAX_DEPTH
from .protocol import CHANNEL, FrameMatcher, ProtocolError, PtsClock, decode, encode

log = logging.getLogger(__name__)

#: Words in a style's name or label -> the classic style painted locally while the server is away.
FAMILIES = (("sketch", "sketch"), ("pencil", "sketch"), ("line", "sketch-clean"), ("toon", "toon"),
            ("comic", "toon-comic"), ("cartoon", "toon"), ("anime", "toon"), ("oil", "oil"))
BACKOFF = (1.0, 30.0)


def fallback_style(style: Style, styles: dict[str, Style] | None = None) -> Style:
    """The classic style of the same family as ``style``: itself if classic, else the first
    family word in its name or label (``ai-sketch`` -> ``sketch``), else ``oil``."""
    if style.backend == "classic":
        return style
    if styles is None:
        styles, _ = load_styles()
    text = f"{style.name} {style.label}".lower()
    for word, name in FAMILIES:
        if word in text and name in styles and styles[name].backend == "classic":
            return styles[name]
    classic = [s for s in styles.values() if s.backend == "classic"]
    return styles.get("oil") or classic[0]


def whip_url(server: str) -> str:
    """``host:port``, ``http://host:port`` or a full ``.../whip`` URL -> the WHIP endpoint."""
    text = server.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"server {server!r}: expected a URL such as http://gpu-box:8890")
    path = parts.path.rstrip("/") or "/whip"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class RemoteRefused(Exception):
    """The server answered, and its answer will not change by retrying (wrong token, bad style)."""


class _Sent:
    __slots__ = ("fid", "t_send", "output", "t_back")

    def __init__(self, fid: int, t_send: float):
        self.fid, self.t_send = fid, t_send
        self.output: np.ndarray | None = None
        self.t_back = 0.0


class _Connection:
    def __init__(self, pc, track, channel, location: str, fps: float | None = None):
        self.pc, self.track, self.channel, self.location = pc, track, channel, location
        self.clock = PtsClock(fps=fps)
        self.matcher = FrameMatcher()
        self.t0 = time.perf_counter()
        self.t_inbound = time.monotonic()
        self.unmatched: collections.deque = collections.deque(maxlen=32)
        self.recv_task: asyncio.Task | None = None


class RemoteBackend(Backend):
    """See the module docstring. ``server``: URL of a ``stylecam serve``; ``token`` or
    ``token_file``: its bearer token (the file is read again at each reconnection, so fixing it
    needs no restart); ``on_event(RunnerEvent)``: told about fallback and recovery (from the
    backend's own thread)."""

    name = "remote"
    batch_size = 1

    def __init__(self, server: str, *, style: Style, token: str | None = None, token_file: str | None = None,
                 exact: bool = False, on_event: Callable | None = None, connect_timeout: float = 10.0,
                 stall_timeout: float = 3.0, frame_timeout: float = 5.0, backoff: tuple = BACKOFF,
                 ice_servers: list | None = None, styles: dict[str, Style] | None = None, fps: float = 30.0):
        try:
            import aiohttp  # noqa: F401
            import aiortc  # noqa: F401
        except ImportError as e:
            raise BackendError(f"the remote backend needs aiortc and aiohttp ({e}); pip install aiortc aiohttp") from e
        try:
            self.url = whip_url(server)
        except ValueError as e:
            raise BackendError(str(e)) from None
        self.host = urlsplit(self.url).netloc
        self._token, self._token_file = token, token_file
        if token_file:
            try:
                read_token(token_file)
            except TokenError as e:
                raise BackendError(str(e)) from None
        self.exact = exact
        self.fps = fps
        # Live: one batch in flight, never waited for. Exact: a few, each waited for.
        self.max_inflight = 4 if exact else 1
        self._depth = MAX_DEPTH if exact else 2
        self.on_event = on_event
        self.connect_timeout, self.stall_timeout, self.frame_timeout = connect_timeout, stall_timeout, frame_timeout
        self.backoff = backoff
        self._ice = ice_servers or []
        self._styles = styles
        self.style = style
        self.fallback = fallback_style(style, styles)
        self._local = None
        self._lock = threading.Condition()
        self._conn: _Connection | None = None
        self._fid = 0
        self._newest: tuple[float, np.ndarray] | None = None
        self._rt: collections.deque = collections.deque(maxlen=512)
        self.frames_sent = self.frames_back = self.frames_local = self.frames_lost = self.out_of_order = 0
        self._last_back = 0
        self.server_metrics: dict = {}
        self.server_info: dict = {}
        self.server_errors: collections.deque = collections.deque(maxlen=16)
        #: The style the server says it paints with (another than asked when it could not start
        #: the one asked for); None until it says.
        self.served_style: str | None = None
        self.up = False
        self._down_reported = False
        self._closing = False
        self._first = threading.Event()
        self._first_error: BaseException | None = None
        self._task: asyncio.Task | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stylecam-remote", daemon=True)
        self._thread.start()
        self._main = asyncio.run_coroutine_threadsafe(self._maintain(), self._loop)
        # The first attempt decides what the caller hears: a refusal is an error; an unreachable
        # server is a warning, and the stream starts on the local fallback.
        self._first.wait(connect_timeout + 5)
        if self._first_error is not None:
            self.close()
            raise BackendError(str(self._first_error))

    # -- Backend -----------------------------------------------------------------------------

    def set_style(self, style: Style) -> None:
        self.style = style
        self.fallback = fallback_style(style, self._styles)
        if self._local is not None:
            self._local.set_style(self.fallback)
        self._send({"type": "style", "name": style.name})

    def set_paused(self, paused: bool) -> None:
        """Ask the server to send frames back unpainted (the runner pauses locally already)."""
        self._send({"type": "pause", "paused": bool(paused)})

    def process(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return self.collect(self.submit(images))

    def submit(self, images: list[np.ndarray]):
        ticket = []
        for image in images:
            with self._lock:
                self._fid += 1
                conn = self._conn if self.up else None
                rec = None
                if conn is not None:
                    rec = _Sent(self._fid, time.perf_counter())
                    pts = conn.clock.next(rec.t_send - conn.t0)
                    conn.matcher.sent(pts, rec)
                    self.frames_sent += 1
            if conn is not None:
                self._loop.call_soon_threadsafe(conn.track.push, image, pts)
            ticket.append((image, rec, conn))
        return ticket

    def collect(self, ticket) -> list[np.ndarray]:
        outputs = []
        for image, rec, conn in ticket:
            result = None
            if rec is not None:
                with self._lock:
                    if self.exact:
                        deadline = rec.t_send + self.frame_timeout
                        while rec.output is None and self._conn is conn and self.up:
                            remaining = deadline - time.perf_counter()
                            if remaining <= 0:
                                break
                            self._lock.wait(min(0.1, remaining))
                        result = rec.output
                        if result is None:
                            self.frames_lost += 1
                    else:
                        result = rec.output
                        if result is None and self._newest is not None and self.up:
                            if time.monotonic() - self._newest[0] < self.stall_timeout:
                                result = self._newest[1]
            if result is None:
                result = self._paint_locally(image)
            elif result.shape != image.shape:
                result = fit(result, (image.shape[1], image.shape[0]))
            outputs.append(result)
        return outputs

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
            except Exception:
                log.debug("stopping the remote session", exc_info=True)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if self._local is not None:
            self._local.close()
            self._local = None

    # -- what the UI and CLI show -------------------------------------------------------------

    @property
    def round_trip_ms(self) -> float | None:
        """Median time from sending a frame to getting its painted copy, over recent frames."""
        with self._lock:
            rt = list(self._rt)[-64:]
        return round(1000 * float(np.median(rt)), 1) if rt else None

    def stats(self) -> dict:
        with self._lock:
            rt = np.asarray(self._rt, dtype=np.float64) * 1000
            return {
                "server": self.host, "connected": self.up,
                "round_trip_p50_ms": round(float(np.percentile(rt, 50)), 1) if rt.size else None,
                "round_trip_p95_ms": round(float(np.percentile(rt, 95)), 1) if rt.size else None,
                "frames_sent": self.frames_sent, "frames_back": self.frames_back,
                "frames_local": self.frames_local, "frames_lost": self.frames_lost,
                "out_of_order": self.out_of_order, "served_style": self.served_style,
                "fallback_style": self.fallback.name,
                "server_metrics": dict(self.server_metrics),
            }

    # -- local fallback ----------------------------------------------------------------------

    def _paint_locally(self, image: np.ndarray) -> np.ndarray:
        if self._local is None:
            from ..stylize.classic import ClassicBackend

            self._local = ClassicBackend(workers=1)
            self._local.set_style(self.fallback)
        self.frames_local += 1
        return self._local.process([image])[0]

    # -- events ------------------------------------------------------------------------------

    def _report(self, kind: str, message: str, level: str) -> None:
        from ..runner import RunnerEvent

        {"info": log.info, "warning": log.warning}.get(level, log.error)("%s", message)
        if self.on_event is not None:
            try:
                self.on_event(RunnerEvent(kind, message, level, "remote"))
            except Exception:
                log.exception("the remote backend's on_event callback failed")

    # -- the session (event-loop thread) -----------------------------------------------------

    def _send(self, message: dict) -> None:
        def send():
            conn = self._conn
            if conn is not None and conn.channel.readyState == "open":
                conn.channel.send(encode(message))

        if self._loop.is_running():
            self._loop.call_soon_threadsafe(send)

    async def _maintain(self) -> None:
        self._task = asyncio.current_task()
        delay = self.backoff[0]
        first = True
        while not self._closing:
            reason = None
            try:
                await self._connect()
                delay = self.backoff[0]
                if self._down_reported:
                    self._report("remote-back", f"the remote stylizer at {self.host} is back; painting there again",
                                 "info")
                self._down_reported = False
                self._first.set()
                first = False
                reason = await self._watch()
            except asyncio.CancelledError:
                raise
            except RemoteRefused as e:
                reason = str(e)
                if first:
                    self._first_error = e
                    self._first.set()
                    return
            except Exception as e:  # unreachable, timed out, connection failed...
                reason = _describe(e)
            finally:
                await self._teardown()
            if self._closing:
                return
            if not self._down_reported:
                self._report("remote-lost", f"the remote stylizer at {self.host} {reason}; painting here with "
                             f"the {self.fallback.title} style and reconnecting", "warning")
                self._down_reported = True
            else:
                log.debug("remote stylizer still away: %s", reason)
            first = False
            self._first.set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff[1])

    async def _connect(self) -> None:
        import aiohttp
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        from .media import FrameQueueTrack, tune_aiortc

        token = self._token
        if self._token_file:
            try:
                token = read_token(self._token_file)
            except TokenError as e:
                raise RemoteRefused(str(e)) from None
        tune_aiortc()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self._ice or None))
        track = FrameQueueTrack(depth=self._depth)
        pc.addTrack(track)
        channel = pc.createDataChannel(CHANNEL)
        conn = _Connection(pc, track, channel, "", fps=self.fps if self.exact else None)
        self._pending = conn  # torn down if this attempt fails half-way
        incoming: asyncio.Future = asyncio.get_running_loop().create_future()

        @pc.on("track")
        def on_track(remote):
            if remote.kind == "video" and not incoming.done():
                incoming.set_result(remote)

        @channel.on("message")
        def on_message(text):
            self._on_message(conn, text)

        await pc.setLocalDescription(await pc.createOffer())
        headers = {"Content-Type": "application/sdp"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        params = {"style": self.style.name, "depth": str(self._depth)}
        timeout = aiohttp.ClientTimeout(total=self.connect_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with http.post(self.url, data=pc.localDescription.sdp, headers=headers, params=params) as resp:
                body = (await resp.text())[:500]
                if resp.status == 401 and token is None:
                    raise RemoteRefused(f"the server at {self.host} needs a token (401); give the file holding "
                                        "it (the file the server was started with) with --token-file")
                if resp.status == 401:
                    raise RemoteRefused(f"the server at {self.host} refused the token (401); check the token file "
                                        "matches the server's --token-file")
                if resp.status == 503:
                    raise ConnectionError(f"is busy ({body.strip() or '503'})")
                if resp.status in (400, 403, 404, 413, 415):
                    raise RemoteRefused(f"the server at {self.host} refused the session ({resp.status}): "
                                        f"{body.strip()}")
                if resp.status != 201:
                    raise ConnectionError(f"answered {resp.status}: {body.strip()}")
                conn.location = resp.headers.get("Location", "")
                answer = body if len(body) < 500 else await resp.text()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        deadline = time.monotonic() + self.connect_timeout
        while pc.connectionState != "connected" or channel.readyState != "open":
            if pc.connectionState in ("failed", "closed") or time.monotonic() > deadline:
                raise ConnectionError(f"no media connection ({pc.connectionState})")
            await asyncio.sleep(0.05)
        remote = await asyncio.wait_for(incoming, timeout=max(0.1, deadline - time.monotonic()))
        conn.recv_task = asyncio.ensure_future(self._receive(conn, remote))
        conn.t_inbound = time.monotonic()
        with self._lock:
            self._conn, self._pending = conn, None
            self._newest = None
            self.up = True
            self._lock.notify_all()

    async def _watch(self) -> str:
        conn = self._conn
        while not self._closing:
            await asyncio.sleep(0.1)
            if conn.pc.connectionState in ("failed", "closed"):
                return f"lost the connection ({conn.pc.connectionState})"
            if conn.recv_task is not None and conn.recv_task.done():
                return "stopped sending video"
            silence = time.monotonic() - conn.t_inbound
            if silence > self.stall_timeout:
                return f"has not answered for {silence:.0f} s"
        return "closed"

    async def _receive(self, conn: _Connection, remote) -> None:
        from .media import to_rgb

        loop = asyncio.get_running_loop()
        while True:
            frame = await remote.recv()
            image = await loop.run_in_executor(None, to_rgb, frame)
            now = time.perf_counter()
            with self._lock:
                conn.t_inbound = time.monotonic()
                self._newest = (conn.t_inbound, image)
                self.frames_back += 1
                known = conn.matcher.offset is not None
                rec = conn.matcher.match(frame.pts)
                if rec is None:
                    conn.unmatched.append((frame.pts, image, now))
                else:
                    if not known:  # the offset was just found: place the frames that came before
                        for pts, img, t in conn.unmatched:
                            earlier = conn.matcher.match(pts)
                            if earlier is not None:
                                self._arrived(earlier, img, t)
                        conn.unmatched.clear()
                    self._arrived(rec, image, now)
                self._lock.notify_all()

    def _arrived(self, rec: _Sent, image: np.ndarray, t: float) -> None:
        # Frames come back in the order they were sent; count any that do not.
        if rec.fid < self._last_back:
            self.out_of_order += 1
        self._last_back = max(self._last_back, rec.fid)
        if rec.output is None:
            rec.output, rec.t_back = image, t
            self._rt.append(t - rec.t_send)

    def _on_message(self, conn: _Connection, text) -> None:
        try:
            message = decode(text)
        except ProtocolError:
            return
        conn.t_inbound = time.monotonic()  # the metrics every half second are the heartbeat
        kind = message.get("type")
        if kind == "metrics":
            self.server_metrics = message
        elif kind == "hello":
            self.server_info = message
            self.served_style = str(message.get("style") or "") or None
        elif kind == "style":
            self.served_style = str(message.get("name") or "") or None
        elif kind == "error":
            text = str(message.get("message", ""))[:300]
            self.server_errors.append(text)
            self._report("remote-error", f"the remote stylizer says: {text}", "warning")

    async def _teardown(self) -> None:
        with self._lock:
            conn = self._conn or getattr(self, "_pending", None)
            self._conn = self._pending = None
            self.up = False
            self._lock.notify_all()
        if conn is None:
            return
        if conn.recv_task is not None:
            conn.recv_task.cancel()
        conn.track.stop()
        if conn.location:  # tell the server at once rather than leave it to its idle timeout
            try:
                import aiohttp

                token = self._token
                if self._token_file:
                    token = read_token(self._token_file)
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                url = urlunsplit(urlsplit(self.url)._replace(path=conn.location))
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
                    async with http.delete(url, headers=headers):
                        pass
            except Exception:
                log.debug("ending the session on the server failed", exc_info=True)
        await conn.pc.close()

    async def _shutdown(self) -> None:
        task = self._task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._teardown()
        # aiortc leaves a few tasks of a closed connection finishing; let them end here rather
        # than be destroyed pending with the loop.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in others:
            t.cancel()
        if others:
            await asyncio.wait(others, timeout=2)


def _describe(error: BaseException) -> str:
    import aiohttp

    if isinstance(error, (aiohttp.ClientConnectorError, ConnectionRefusedError)):
        return "cannot be reached"
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return "did not answer in time"
    if isinstance(error, ConnectionError) and str(error):
        return str(error)
    return f"failed ({type(error).__name__}: {error})"
