"""The MJPEG output: a small HTTP server on 127.0.0.1 (unless the user binds elsewhere) that
serves ``/`` (a page with the stream) and ``/stream.mjpg`` to OBS (Media Source) and browsers.

Bad or hostile clients cannot stop it: foreign Host headers are refused, a whole request must
arrive within a deadline, viewers are capped, and the stream threads never block the pipeline.
"""

from __future__ import annotations

import collections
import io
import ipaddress
import logging
import os
import socket
import sys
import threading
import time

import cv2
import numpy as np

from .frames import Frame
from .sink_base import Sink, SinkError

log = logging.getLogger(__name__)


_MJPEG_BOUNDARY = "stylecamframe"

_MJPEG_INDEX = """<!doctype html>
<html><head><meta charset="utf-8"><title>stylecam</title>
<style>body{{margin:0;background:#111;color:#ccc;font:14px sans-serif}}img{{display:block;max-width:100vw;max-height:92vh;margin:auto}}p{{text-align:center}}</style>
</head><body><img src="/stream.mjpg" alt="stylecam stream">
<p>stylecam stream: <code>{url}</code> &mdash; in OBS add a Media Source, untick "Local File" and give this URL as Input.</p>
</body></html>
"""


class MjpegSink(Sink):
    """Serves the stream as MJPEG over HTTP (multipart/x-mixed-replace) on 127.0.0.1.

    ``GET /stream.mjpg`` is the stream (OBS Media Source or Browser Source, a browser, ffmpeg and
    OpenCV read it), ``GET /`` a page that shows it; every other path is 404. Requests whose
    ``Host`` header names anything but this machine are refused (403): a web page on another
    site could otherwise reach the stream through DNS rebinding.

    Each client has its own thread and only ever gets the newest frame, so a slow client skips
    frames and never holds up the stream or the other clients; a client that accepts nothing for
    ``send_timeout`` seconds is dropped. JPEG encoding happens once per frame, lazily, in the
    first client thread that needs it: with nobody watching, ``write`` costs one copy.

    Any local process can connect, so nothing a client does may lock others out: a request must
    arrive whole within ``header_timeout`` seconds (a client that dribbles a byte at a time is
    dropped); at most ``max_pending`` connections may be sending their request at once, and a
    new one pushes out the oldest of them (a real viewer sends its request at once, a slow one
    is the one that waits); at most ``max_viewers`` watch at once (the next gets 503). So the
    server holds a bounded number of sockets and threads whatever arrives, and never runs out
    of file descriptors. Connections that end abnormally are one debug line, never a traceback.

    ``port`` 0 picks a free port; :attr:`port` and :attr:`url` tell the real one once started.
    """

    #: After a failure the runner may close and open it again (clients reconnect to the same port).
    reopenable = True

    #: Connections the kernel keeps waiting for ``accept`` (Python's default of 5 resets bursts).
    BACKLOG = 512
    #: The longest request head read (browsers send 1-2 KiB).
    MAX_HEAD = 16 << 10

    def __init__(self, port: int = 8090, *, host: str = "127.0.0.1", quality: int = 80,
                 send_timeout: float = 5.0, max_viewers: int = 16, header_timeout: float = 5.0,
                 max_pending: int = 64):
        if not 0 <= port <= 65535:
            raise ValueError(f"mjpeg port {port}: give 1-65535, or 0 for any free port")
        if not 10 <= quality <= 100:
            raise ValueError(f"mjpeg quality {quality}: give 10-100")
        if not 1 <= max_viewers <= 1000:
            raise ValueError(f"mjpeg viewers={max_viewers}: give 1-1000")
        self.max_viewers = max_viewers
        self.header_timeout = header_timeout
        self.max_pending = max(1, max_pending)
        self._conn_lock = threading.Lock()
        self._pending: collections.OrderedDict = collections.OrderedDict()  # sending their request
        self._viewers: set = set()
        #: Connections pushed out while still sending their request, and viewers turned away.
        self.evicted = 0
        self.refused = 0
        self.host = host
        self.port = port
        self.quality = quality
        self.send_timeout = send_timeout
        self.name = f"mjpeg:{port}"
        self.frames_written = 0
        self._cond = threading.Condition()
        self._image: np.ndarray | None = None
        self._seq = 0
        self._jpeg: tuple[int, bytes] | None = None
        self._encode_lock = threading.Lock()
        self._clients: set = set()
        self._closing = False
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if _unspecified(self.host):  # bound to every interface: this machine reaches it on loopback
            host = "127.0.0.1"
        return f"http://{host}:{self.port}/stream.mjpg"

    @property
    def clients(self) -> int:
        """Open connections (viewers and requests still arriving)."""
        return len(self._clients)

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    def _admit(self, conn) -> None:
        """A new connection: it may send its request; past ``max_pending`` the oldest that is
        still sending one is pushed out (its thread sees the socket end and leaves)."""
        with self._conn_lock:
            self._pending[conn] = None
            while len(self._pending) > self.max_pending:
                old, _ = self._pending.popitem(last=False)
                self.evicted += 1
                try:
                    old.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _request_done(self, conn) -> None:
        with self._conn_lock:
            self._pending.pop(conn, None)

    def _add_viewer(self, conn) -> bool:
        with self._conn_lock:
            if len(self._viewers) >= self.max_viewers:
                self.refused += 1
                return False
            self._viewers.add(conn)
            return True

    def _forget(self, conn) -> None:
        with self._conn_lock:
            self._pending.pop(conn, None)
            self._viewers.discard(conn)
        self._clients.discard(conn)

    def start(self) -> None:
        """Bind the port and start serving (idempotent). Raises SinkError if the port is taken."""
        if self._server is not None:
            return
        import http.server

        handler = _mjpeg_handler(self)

        sink = self

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            # SO_REUSEADDR lets a restart rebind past TIME_WAIT on POSIX; on Windows it would let
            # a second process bind the same port, so it stays off there.
            allow_reuse_address = os.name != "nt"
            address_family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            request_queue_size = self.BACKLOG

            def process_request(self, request, client_address):
                sink._clients.add(request)
                sink._admit(request)
                super().process_request(request, client_address)

            def handle_error(self, request, client_address):
                # A client that vanished mid-request is normal on a network: one debug line.
                log.debug("mjpeg %s: connection ended: %s", client_address[0], sys.exc_info()[1])

        try:
            self._server = Server((self.host, self.port), handler)
        except OSError as e:
            hint = ("pick another with mjpeg:PORT, or mjpeg:0 for any free port"
                    if e.errno in (98, 48, 10048) else "check the bind address")
            raise SinkError(f"cannot serve MJPEG on {self.host}:{self.port}: {e.strerror or e}; {hint}") from e
        self.port = self._server.server_address[1]
        self.name = f"mjpeg:{self.port}"
        self._closing = False
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="stylecam-mjpeg", daemon=True)
        self._thread.start()
        log.info("MJPEG stream at %s", self.url)

    def open(self, size: tuple[int, int], fps: float) -> None:
        self.start()

    def write(self, frame: Frame) -> None:
        if self._server is None:
            self.start()
        image = frame.image.copy()  # the backend may reuse its output buffer for the next batch
        with self._cond:
            self._image = image
            self._seq += 1
            self._cond.notify_all()
        self.frames_written += 1

    def _wait_frame(self, after: int, timeout: float | None = None) -> tuple[int, bytes] | None | bool:
        """Block until a frame newer than ``after`` exists; return (seq, jpeg), None on close,
        or False when ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._seq <= after and not self._closing:
                remaining = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            if self._closing:
                return None
            seq, image = self._seq, self._image
        with self._encode_lock:
            if self._jpeg is None or self._jpeg[0] < seq:
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                       [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                if not ok:
                    raise SinkError("JPEG encoding failed")
                self._jpeg = (seq, buf.tobytes())
            return self._jpeg

    def close(self) -> None:
        if self._server is None:
            return
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._server.shutdown()
        # Client threads blocked in a send to a stalled reader wake only when their socket dies.
        for conn in list(self._clients):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(2.0)
        deadline = time.monotonic() + 2.0
        while self._clients and time.monotonic() < deadline:  # let client threads say goodbye
            time.sleep(0.01)
        self._server = None


def _host_allowed(host_header: str | None, bind_host: str) -> bool:
    """True when a request's Host names this machine (DNS-rebinding guard).

    Loopback names and addresses always pass. When the server was bound to a non-loopback address
    on purpose, any IP literal passes too (a LAN client typing the address): rebinding needs a
    host *name* the attacker controls, never a bare address.
    """
    if not host_header:
        return True  # HTTP/1.0 clients send none; browsers (the rebinding vector) always do
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1:host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    host = host.rstrip(".")
    if host == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if addr.is_loopback:
        return True
    try:
        return not ipaddress.ip_address(bind_host).is_loopback
    except ValueError:
        return False


def _mjpeg_handler(sink: MjpegSink):
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "stylecam"
        sys_version = ""

        def log_message(self, fmt, *args):  # requests go to the debug log, not stderr
            log.debug("mjpeg %s: " + fmt, self.client_address[0], *args)

        def setup(self):
            super().setup()
            # A stalled reader makes send() raise after this long instead of blocking forever.
            self.connection.settimeout(sink.send_timeout)

        def handle(self):
            # One request per connection, read whole within the deadline before http.server
            # parses it (its line-by-line reads have no overall deadline).
            head = self._read_head()
            if head is None:
                self.close_connection = True
                return
            self.rfile = io.BytesIO(head)
            self.handle_one_request()

        def _read_head(self) -> bytes | None:
            conn = self.connection
            deadline = time.monotonic() + sink.header_timeout
            data = b""
            try:
                while b"\r\n\r\n" not in data and b"\n\n" not in data:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        log.debug("mjpeg %s: request not complete within %g s; dropped",
                                  self.client_address[0], sink.header_timeout)
                        return None
                    if len(data) > sink.MAX_HEAD:
                        log.debug("mjpeg %s: request head over %d bytes; dropped", self.client_address[0],
                                  sink.MAX_HEAD)
                        return None
                    conn.settimeout(remaining)
                    chunk = conn.recv(4096)
                    if not chunk:
                        log.debug("mjpeg %s: connection closed before a whole request", self.client_address[0])
                        return None
                    data += chunk
            except TimeoutError:  # socket.timeout: the deadline passed inside recv
                log.debug("mjpeg %s: request not complete within %g s; dropped", self.client_address[0],
                          sink.header_timeout)
                return None
            except OSError as e:
                log.debug("mjpeg %s: connection ended before a whole request: %s", self.client_address[0], e)
                return None
            finally:
                sink._request_done(conn)
                try:
                    conn.settimeout(sink.send_timeout)
                except OSError:
                    pass
            return data

        def finish(self):
            sink._forget(self.connection)
            try:
                super().finish()
            except OSError:
                pass

        def _reply(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8"):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if not _host_allowed(self.headers.get("Host"), sink.host):
                self._reply(403, b"forbidden: this stream is served to localhost only\n")
                return
            path = self.path.split("?", 1)[0]
            if path == "/":
                self._reply(200, _MJPEG_INDEX.format(url=sink.url).encode(), "text/html; charset=utf-8")
            elif path == "/stream.mjpg":
                self._stream()
            else:
                self._reply(404, b"not found: the stream is at /stream.mjpg\n")

        def _stream(self):
            if not sink._add_viewer(self.connection):
                self.send_response(503)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Retry-After", "5")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(f"busy: {sink.max_viewers} viewers are watching already\n".encode())
                return
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={_MJPEG_BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            seq = 0
            try:
                while True:
                    got = sink._wait_frame(seq, timeout=1.0)
                    if got is None:
                        return
                    if got is False:  # no new frame: a viewer that left must not keep its place
                        if _peer_gone(self.connection):
                            log.debug("mjpeg %s: viewer left", self.client_address[0])
                            break
                        continue
                    seq, jpeg = got
                    head = (f"--{_MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                            f"Content-Length: {len(jpeg)}\r\n\r\n").encode()
                    self.wfile.write(head + jpeg + b"\r\n")
                    self.wfile.flush()
            except (OSError, socket.timeout) as e:  # the client went away or stopped reading
                log.debug("mjpeg client %s left: %s", self.client_address[0], e)
            self.close_connection = True

    return Handler


def _peer_gone(conn) -> bool:
    """True when the other end closed ``conn`` (without reading or waiting)."""
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


# ---- the --sink grammar -------------------------------------------------------------------


def _unspecified(host: str) -> bool:
    """True for the all-interfaces address of either family."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False
