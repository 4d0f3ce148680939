"""Measure remote stylizing: ``python -m stylecam.core.remote.bench``.

Starts a ``stylecam serve`` subprocess on 127.0.0.1 (or uses ``--server``), opens ``--sessions``
live sessions that each send pre-rendered test-card frames at ``--size``/``--fps`` for
``--seconds``, and reports per session: round trip p50/p95 (send -> painted copy back),
frames sent, back and dropped, the server's own latency and batch size; and per frame the CPU
time of each process (client: encode, send, receive, decode; server: decode, paint, encode).

``--transport-only`` pauses the sessions on the server (frames go back unpainted), so the round
trip is what the transport adds: encode + send + decode, both ways. The GPU measurement is
``--sessions 4 --processes --bundle PATH --style ai-oil --size 1280x720`` on the GPU machine
(the server runs the same hub and backend as ``stylecam serve``; ``scripts/gpu_serve.sh`` runs
it). ``--processes`` gives each session a client process of its own, so four 720p encoders and
decoders are not measured through one Python interpreter's lock. With ``--summary PATH`` the
server's own counters (``GET /status``: batch sizes formed, batches in flight at once, backend
milliseconds per batch) are written beside the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time



def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` and its threads (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def start_server(args) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "stylecam.core", "serve", "--port", "0", "--style", args.style,
           "--max-sessions", str(max(4, args.sessions)), "--gather-ms", str(args.gather_ms)]
    if args.bundle:
        cmd += ["--bundle", args.bundle]
    if args.batch:
        cmd += ["--batch", str(args.batch)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    for line in proc.stdout:
        m = re.search(r"serving at (\S+)", line)
        if m:
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, m.group(1)
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit("stylecam serve did not start")


def server_status(url: str) -> dict:
    """The server's ``GET /status`` (hub counters, device)."""
    import urllib.request

    with urllib.request.urlopen(url.rsplit("/whip", 1)[0] + "/status", timeout=10) as resp:
        return json.load(resp)


def run_processes(args) -> tuple[list[dict], dict]:
    """One client process per session against one server; rows of every session, and the
    server's status at the end."""
    proc, url = (None, args.server) if args.server else start_server(args)
    try:
        cmd = [sys.executable, "-m", "stylecam.core.remote.bench", "--server", url, "--sessions", "1",
               "--size", f"{args.size[0]}x{args.size[1]}", "--fps", str(args.fps), "--seconds", str(args.seconds),
               "--style", args.style]
        if args.transport_only:
            cmd.append("--transport-only")
        cpu0, t0 = (_proc_cpu(proc.pid) if proc else 0.0), time.perf_counter()
        children = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(args.sessions)]
        rows = []
        for i, child in enumerate(children):
            out, _ = child.communicate(timeout=args.seconds + 300)
            if child.returncode != 0:
                raise SystemExit(f"client process {i} failed ({child.returncode})")
            for line in out.splitlines():
                if line.startswith("{"):
                    row = json.loads(line)
                    row["session"] = i
                    rows.append(row)
        status = server_status(url)
        if proc is not None:  # over the whole run, warm-up included
            status["server_cpu_s"] = round(_proc_cpu(proc.pid) - cpu0, 2)
            status["wall_s"] = round(time.perf_counter() - t0, 2)
        return rows, status
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=30)


def run(args) -> list[dict]:
    from ..sources import PatternSource
    from ..styles import load_styles
    from ..stylize.base import create_backend

    styles, _ = load_styles()
    style = styles[args.style]
    proc, url = (None, args.server) if args.server else start_server(args)
    args.status = None
    w, h = args.size
    pattern = PatternSource((w, h), fps=args.fps, realtime=False)
    frames = [pattern.read() for _ in range(60)]  # drawn before timing: the client's CPU is the transport's
    backends = [create_backend(style, server=url, stall_timeout=10) for _ in range(args.sessions)]
    try:
        if args.transport_only:
            for b in backends:
                b.set_paused(True)
        time.sleep(1.0)
        # Warm-up: let congestion control and the server's engine settle.
        _feed(backends, frames, args.fps, min(5.0, args.seconds / 4))
        for b in backends:
            b._rt.clear()
        before = [b.stats() for b in backends]
        cpu_client0 = _self_cpu()
        cpu_server0 = _proc_cpu(proc.pid) if proc else None
        t0 = time.perf_counter()
        _feed(backends, frames, args.fps, args.seconds)
        elapsed = time.perf_counter() - t0
        time.sleep(0.5)  # the frames in flight come back
        cpu_client = _self_cpu() - cpu_client0
        cpu_server = _proc_cpu(proc.pid) - cpu_server0 if proc else None
        rows = []
        for i, (b, s0) in enumerate(zip(backends, before)):
            s = b.stats()
            sent = s["frames_sent"] - s0["frames_sent"]
            back = s["frames_back"] - s0["frames_back"]
            m = s["server_metrics"]
            rows.append({
                "session": i, "size": f"{w}x{h}", "fps_target": args.fps, "seconds": round(elapsed, 1),
                "style": "(paused: transport only)" if args.transport_only else style.name,
                "round_trip_p50_ms": s["round_trip_p50_ms"], "round_trip_p95_ms": s["round_trip_p95_ms"],
                "frames_sent": sent, "frames_back": back, "frames_dropped": max(0, sent - back),
                "fps_back": round(back / elapsed, 1),
                "server_latency_ms": m.get("latency_ms"), "server_batch": m.get("batch"),
                "server_gpu_ms": m.get("gpu_ms"),
                "client_cpu_ms_per_frame": round(1000 * cpu_client / max(1, sum(1 for _ in backends) * sent), 2),
                "server_cpu_ms_per_frame": (round(1000 * cpu_server / max(1, len(backends) * sent), 2)
                                            if cpu_server is not None else None),
                "machine": f"{platform.node()} {os.cpu_count()} CPUs",
            })
        try:
            args.status = server_status(url)
        except Exception as e:  # the rows stand without it
            print(f"stylecam bench: no server status: {e}", file=sys.stderr)
        return rows
    finally:
        for b in backends:
            b.close()
        if proc:
            proc.terminate()
            proc.wait(timeout=30)


def _feed(backends, frames, fps: float, seconds: float) -> None:
    """Each session sends at ``fps`` from its own thread, as a camera would."""
    def one(backend):
        t0 = time.perf_counter()
        n = 0
        while True:
            due = t0 + n / fps
            now = time.perf_counter()
            if due - t0 > seconds:
                return
            if due > now:
                time.sleep(due - now)
            backend.collect(backend.submit([frames[n % len(frames)]]))
            n += 1

    threads = [threading.Thread(target=one, args=(b,)) for b in backends]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main(argv=None) -> int:
    from ..cli_args import size as _size
    from ..runtime import configure_runtime

    p = argparse.ArgumentParser(prog="python -m stylecam.core.remote.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--server", default=None, help="an existing server (default: start one on 127.0.0.1)")
    p.add_argument("--sessions", type=int, default=1)
    p.add_argument("--size", type=_size, default=(640, 360))
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--style", default="oil")
    p.add_argument("--bundle", default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--gather-ms", type=float, default=10.0, help="the server's --gather-ms (default 10)")
    p.add_argument("--transport-only", action="store_true", help="pause painting: measure the transport alone")
    p.add_argument("--processes", action="store_true", help="one client process per session")
    p.add_argument("--json", default=None, help="append the rows to this JSONL file")
    p.add_argument("--summary", default=None, help="write the rows and the server's status to this JSON file")
    args = p.parse_args(argv)
    configure_runtime()
    if args.processes and args.sessions > 1:
        rows, status = run_processes(args)
    else:
        rows = run(args)
        status = args.status
    if args.summary:
        with open(args.summary, "w") as f:
            json.dump({"sessions": rows, "server": status, "args": {k: v for k, v in vars(args).items()
                                                                      if k != "status"}}, f, indent=1)
    for r in rows:
        print(json.dumps(r))
    if args.json:
        with open(args.json, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
