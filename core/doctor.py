"""`stylecam doctor`: what works on this machine, and for what does not, the exact fix.

The fix texts it prints live in :mod:`stylecam.core.fix_texts` (re-exported here:
``doctor.virtualcam_fix`` and friends), so the CLI's errors, this report and the desktop app's
notifications all say the same thing.

Each check is a function returning a :class:`Check`; :func:`run_checks` runs them. The default
path (classic style to a file or MJPEG) needs nothing but OpenCV. The exit code is 1 when any
check fails (a part that does not work here; a missing optional part is a warning, not a failure)
and ``--require PART`` makes a warning of that part (virtualcam, screen, camera, gpu, models) count
too.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .fix_texts import (CUDA_TORCH_COMMAND, MODELS_FIX, MODELS_PULL_COMMAND, MODPROBE_LINE,  # noqa: F401
                        REINSTALL_FIX, camera_fix, compiler_fix, first_sentences, gpu_fix,
                        linux_v4l2loopback_state,
                        screen_fix, virtualcam_fix)
from .stylize.stacks import hub_repos

#: What the report prints per status.
_MARKS = {"ok": "ok  ", "warn": "warn", "fail": "FAIL", "info": "info"}


# ---- checks -------------------------------------------------------------------------------

@dataclass
class Check:
    """One line of the report. ``status``: ok, warn (works partly / optional part missing),
    fail (does not work), info (nothing to judge)."""

    part: str
    status: str
    summary: str
    details: list[str] = field(default_factory=list)
    fix: str | None = None


def check_default_path() -> Check:
    """The path that must always work: the default classic style, a file and a JPEG, no GPU."""
    try:
        import cv2
        import numpy as np

        from .cli_args import resolve_style
        from .frames import Frame
        from .sinks import FileSink
        from .sources import PatternSource
        from .stylize.base import create_backend

        style = resolve_style(None, "classic")
        backend = create_backend(style)
        try:
            frames = [PatternSource((64, 48), realtime=False).read() for _ in range(2)]
            out = backend.process(frames)
        finally:
            backend.close()
        if len(out) != 2 or out[0].shape != (48, 64, 3) or out[0].dtype != np.uint8:
            raise RuntimeError(f"classic backend returned {len(out)} frames of shape {out[0].shape}")
        ok, _ = cv2.imencode(".jpg", out[0])
        if not ok:
            raise RuntimeError("OpenCV cannot encode JPEG")
        with tempfile.TemporaryDirectory() as tmp:
            sink = FileSink(os.path.join(tmp, "check.mp4"))
            sink.open((64, 48), 30.0)
            for i, img in enumerate(out):
                sink.write(Frame(img, i))
            sink.close()
            if os.path.getsize(os.path.join(tmp, "check.mp4")) == 0:
                raise RuntimeError("OpenCV wrote an empty video file")
    except Exception as e:
        return Check("default", "fail", f"the default path (classic style to a file) fails: {e}",
                     fix=REINSTALL_FIX)
    return Check("default", "ok", f"classic style '{style.name}' -> video file and MJPEG work (no GPU needed)")


def c_compiler() -> str | None:
    """The C compiler Triton would build its launchers with (it looks the same way: CC, else
    gcc, else clang), or None: compile mode (AI speed) cannot work without one."""
    import shutil

    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc) or (cc if os.path.isfile(cc) else None)
    return shutil.which("gcc") or shutil.which("clang")


def check_gpu() -> Check:
    try:
        import torch
    except Exception as e:  # torch missing or broken: only diffusion styles need it
        return Check("gpu", "warn", f"torch does not import ({e}); diffusion styles are unavailable",
                     fix=REINSTALL_FIX)
    details = [f"torch {torch.__version__}, built for CUDA {torch.version.cuda or '-'}"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            details.append(f"cuda:{i} {props.name}, {props.total_memory / 2**30:.0f} GiB, "
                           f"compute {props.major}.{props.minor}")
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        # The GPU works either way (the check stays ok); compiling is the optional speed-up.
        cc = c_compiler()
        details.append(f"AI speed (compiling): C compiler {cc}" if cc else
                       f"AI speed (compiling): no C compiler found. {compiler_fix()}")
        return Check("gpu", "ok", f"CUDA available: {names}", details)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return Check("gpu", "ok", "Apple GPU (MPS) available", details)
    build = "a CPU-only torch build" if not torch.version.cuda else "CUDA build, but no usable GPU/driver"
    return Check("gpu", "warn", f"CUDA available: no ({build}); diffusion styles will be slow",
                 details, gpu_fix())


def check_screen() -> Check:
    try:
        import mss
        import numpy as np

        with (getattr(mss, "MSS", None) or mss.mss)() as sct:
            monitors = sct.monitors
            if len(monitors) < 2:
                raise RuntimeError("no monitor found")
            m = monitors[1]
            box = {"left": m["left"], "top": m["top"], "width": min(m["width"], 64),
                   "height": min(m["height"], 64)}
            shot = np.asarray(sct.grab(box))
            details = [f"monitor {i}: {mon['width']}x{mon['height']} at {mon['left']},{mon['top']}"
                       for i, mon in enumerate(monitors) if i]
        if shot.shape[:2] != (box["height"], box["width"]):
            raise RuntimeError(f"grab returned shape {shot.shape}")
    except Exception as e:
        return Check("screen", "fail", "screen capture does not work", fix=screen_fix(e))
    return Check("screen", "ok", f"screen capture works ({len(monitors) - 1} monitor(s); "
                 "--source screen, screen:N, screen:X,Y,W,H)", details)


def _is_loopback(node: str) -> bool:
    """A v4l2loopback node has no parent device in sysfs (older module versions) or one that the
    v4l2loopback driver owns (newer ones)."""
    if not os.path.isdir("/sys/module/v4l2loopback"):
        return False
    parent = f"/sys/class/video4linux/{node}/device"
    if not os.path.exists(parent):
        return True
    names = (os.path.basename(os.path.realpath(parent)), os.path.basename(os.path.realpath(parent + "/driver")))
    return any("v4l2loopback" in n for n in names)


def find_cameras(max_index: int = 4) -> list[dict]:
    """Cameras on this machine: on Linux the /dev/video* nodes (named from sysfs, without opening
    them: opening a busy camera can stall); elsewhere indices 0..max_index that OpenCV opens."""
    found = []
    if sys.platform.startswith("linux"):
        for dev in sorted(glob.glob("/dev/video*"), key=lambda p: (len(p), p)):
            node = os.path.basename(dev)
            name = ""
            try:
                with open(f"/sys/class/video4linux/{node}/name") as f:
                    name = f.read().strip()
            except OSError:
                pass
            found.append({"device": dev, "name": name, "readable": os.access(dev, os.R_OK),
                          "loopback": _is_loopback(node)})
        return found
    import cv2

    for i in range(max_index + 1):
        cap = cv2.VideoCapture(i)
        try:
            if cap.isOpened():
                found.append({"device": i, "name": "", "readable": True, "loopback": False})
        finally:
            cap.release()
    return found


def check_cameras() -> Check:
    cams = find_cameras()
    real = [c for c in cams if not c["loopback"]]
    if not real:
        return Check("camera", "warn", "no camera found (--source camera needs one; screen and files do not)",
                     fix=camera_fix(0, "missing"))
    details = []
    for c in cams:
        flags = [] if c["readable"] else ["no read permission"]
        if c["loopback"]:
            flags.append("virtual (v4l2loopback)")
        details.append(f"{c['device']}" + (f" {c['name']}" if c["name"] else "")
                       + (f" [{', '.join(flags)}]" if flags else ""))
    unreadable = [c for c in real if not c["readable"]]
    if unreadable:
        return Check("camera", "warn", f"{len(real)} camera(s), {len(unreadable)} not readable", details,
                     camera_fix(unreadable[0]["device"], "unopenable"))
    return Check("camera", "ok", f"{len(real)} camera(s) found (--source camera:N or camera:PATH)", details)


def check_virtualcam(size: tuple[int, int] = (1280, 720), fps: float = 30.0) -> Check:
    """Open each pyvirtualcam backend once (and close it) to tell which one works."""
    try:
        import pyvirtualcam
    except Exception as e:
        return Check("virtualcam", "fail", f"pyvirtualcam does not import: {e}",
                     fix=REINSTALL_FIX)
    backends = dict(pyvirtualcam.camera.BACKENDS)
    if not backends:
        return Check("virtualcam", "fail", f"pyvirtualcam has no backend on {platform.system()}",
                     fix=virtualcam_fix(system=platform.system()))
    details, working, errors = [], [], []
    for name in backends:
        try:
            cam = pyvirtualcam.Camera(size[0], size[1], fps, backend=name)
        except Exception as e:
            details.append(f"backend {name}: not available ({first_sentences(e)})")
            errors.append(str(e))
            continue
        try:
            details.append(f"backend {name}: works, device {cam.device}")
            working.append(name)
        finally:
            cam.close()
    if working:
        return Check("virtualcam", "ok", f"virtual camera works ({', '.join(working)}; --sink virtualcam)", details)
    # The same words the CLI prints when `--sink virtualcam` fails.
    return Check("virtualcam", "fail", "no virtual camera (--sink virtualcam will fail)", details,
                 virtualcam_fix(error="\n".join(errors)))


# -- model cache: the hub repositories of the stacks' public weights ----------------------

#: Hub repositories stylecam knows how to use: repo id -> what it is for (from the stack
#: records, so every stack with public weights is listed).
KNOWN_BUNDLES: dict[str, str] = hub_repos()


def register_known_bundle(repo_id: str, description: str) -> None:
    KNOWN_BUNDLES[repo_id] = description


def hub_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # huggingface_hub missing: report the path it would use
        home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
        return os.environ.get("HF_HUB_CACHE", os.path.join(home, "hub"))


def model_cache_status(cache_dir: str | None = None) -> list[dict]:
    """Each known bundle: is a snapshot of it in the hub cache, where, how big, and which of its
    weight files are damaged (cut short by an interrupted download: the hub counts them present)."""
    cache_dir = cache_dir or hub_cache_dir()
    rows = []
    for repo_id, description in KNOWN_BUNDLES.items():
        folder = os.path.join(cache_dir, "models--" + repo_id.replace("/", "--"))
        snapshots = os.path.join(folder, "snapshots")
        present = os.path.isdir(snapshots) and bool(os.listdir(snapshots))
        size = 0
        if present:
            for root, _, files in os.walk(os.path.join(folder, "blobs")):
                size += sum(os.path.getsize(os.path.join(root, f)) for f in files)
        rows.append({"repo_id": repo_id, "description": description, "present": present,
                     "path": folder if present else None, "bytes": size,
                     "damaged": _damaged_weights(snapshots) if present else []})
    return rows


def _damaged_weights(snapshots: str) -> list[str]:
    """The ``.safetensors`` files under ``snapshots`` whose header says they are not whole (headers
    only: no model library, no torch)."""
    from .stylize.damage import safetensors_problem

    found = []
    for root, _, files in os.walk(snapshots):
        for name in sorted(files):
            path = Path(root) / name
            if name.endswith(".safetensors") and path.exists() and safetensors_problem(path):
                found.append(str(path))
    return found


def check_models() -> Check:
    cache = hub_cache_dir()
    rows = model_cache_status(cache)
    details = [f"{r['repo_id']}: " + (f"cached ({r['bytes'] / 2**20:.0f} MiB)" if r["present"] else "not downloaded")
               + f" - {r['description']}"
               + "".join(f"; DAMAGED: {path} (cut short or not safetensors)" for path in r["damaged"]) for r in rows]
    have = [r for r in rows if r["present"]]
    summary = f"{len(have)} of {len(rows)} known model bundles in {cache}"
    damaged = [r["repo_id"] for r in rows if r["damaged"]]
    if damaged:
        return Check("models", "warn", summary + f"; damaged files in {', '.join(damaged)}", details,
                     "An interrupted download left damaged files; `stylecam models pull STACK` (the stack "
                     "that uses them: `stylecam models list`) deletes the damaged copies and downloads them again.")
    if len(have) == len(rows):
        return Check("models", "ok", summary, details)
    return Check("models", "info", summary + " (classic styles need none)", details,
                 MODELS_FIX)


# -- a remote stylizer (stylecam serve) -----------------------------------------------------

#: The server to check: set from ``doctor --server/--token-file``, else the environment.
REMOTE_TARGET: dict = {}


def check_remote() -> Check:
    """A configured ``stylecam serve``: reachable, token accepted, what it runs on, and one
    frame there and back (which needs the UDP path WebRTC uses, not only HTTP)."""
    server = REMOTE_TARGET.get("server") or os.environ.get("STYLECAM_SERVER")
    token_file = REMOTE_TARGET.get("token_file") or os.environ.get("STYLECAM_TOKEN_FILE")
    if not server:
        return Check("remote", "info", "no remote stylizer configured (stylecam doctor --server URL checks one)")
    import urllib.error
    import urllib.request

    from .remote.auth import TokenError, read_token
    from .remote.client import whip_url

    fix = ("start it on the GPU machine with `stylecam serve` (see docs/remote.md); across networks use "
           "--tls-cert/--tls-key or an SSH tunnel")
    try:
        url = whip_url(server)
        token = read_token(token_file) if token_file else None
    except (ValueError, TokenError) as e:
        return Check("remote", "fail", str(e),
                     fix="give the address `stylecam serve` printed and a readable token file")
    request = urllib.request.Request(url.rsplit("/whip", 1)[0] + "/status")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            status = json.loads(resp.read(65536).decode("utf-8"))
    except urllib.error.HTTPError as e:
        if e.code == 401 and not token:
            return Check("remote", "fail", f"{server} needs a token (401)",
                         fix="give the file holding it: the same file as the server's --token-file")
        if e.code == 401:
            return Check("remote", "fail", f"{server} refused the token (401)",
                         fix="use the same token file as the server's --token-file")
        return Check("remote", "fail", f"{server} answered {e.code}", fix=fix)
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return Check("remote", "fail", f"cannot reach {server}: {reason}", fix=fix)
    details = [f"device: {status.get('device')}", f"sessions: {status.get('sessions')} of {status.get('max_sessions')}",
               f"default style: {status.get('style')}"]
    try:
        rt = _remote_round_trip(url, token_file)
        details.append(f"one 320x180 frame there and back: {rt:.0f} ms")
    except Exception as e:
        return Check("remote", "warn", f"{server} answers but no video came back: {e}", details,
                     "WebRTC needs a UDP path between the machines: same network or VPN, or a TURN server "
                     "(docs/remote.md)")
    return Check("remote", "ok", f"{server}: stylecam {status.get('version')} on {status.get('device')}", details)


def _remote_round_trip(url: str, token_file: str | None) -> float:
    import numpy as np

    from .styles import load_styles
    from .stylize.base import create_backend

    styles, _ = load_styles()
    backend = create_backend(styles["oil"], server=url, token_file=token_file, exact=True, frame_timeout=10)
    try:
        frame = np.full((180, 320, 3), 128, np.uint8)
        backend.process([frame])
        stats = backend.stats()
    finally:
        backend.close()
    if stats["frames_local"] or stats["round_trip_p50_ms"] is None:
        raise RuntimeError("the frame did not come back in 10 s")
    return stats["round_trip_p50_ms"]


#: part -> check, in report order.
CHECKS = {
    "default": check_default_path,
    "gpu": check_gpu,
    "screen": check_screen,
    "camera": check_cameras,
    "virtualcam": check_virtualcam,
    "models": check_models,
    "remote": check_remote,
}


def run_checks(parts: list[str] | None = None) -> list[Check]:
    results = []
    for part in parts or list(CHECKS):
        try:
            results.append(CHECKS[part]())
        except Exception as e:  # a broken check must not hide the others
            results.append(Check(part, "fail", f"the check itself failed: {e!r}"))
    return results


def exit_code(results: list[Check], required: list[str]) -> int:
    """0 when no check fails and every required part is ok (the default path always is), else 1."""
    need = {"default", *required}
    return 1 if any(c.status == "fail" or (c.part in need and c.status != "ok") for c in results) else 0


def format_report(results: list[Check], required: list[str]) -> str:
    lines = [f"stylecam doctor — {platform.system()} {platform.release()}, Python {platform.python_version()}"]
    for c in results:
        lines.append(f"[{_MARKS.get(c.status, c.status)}] {c.part:<10} {c.summary}")
        lines.extend(f"       {d}" for d in c.details)
        if c.fix and c.status != "ok":
            lines.append(f"       fix: {c.fix}")
    need = {"default", *required}
    failing = [c.part for c in results if c.status == "fail" or (c.part in need and c.status != "ok")]
    default_ok = all(c.status == "ok" for c in results if c.part == "default")
    if not failing:
        wanted = ", ".join(["default", *required])
        lines.append(f"result: ready ({wanted} checked as required)")
    else:
        works = ("; classic styles to a file or MJPEG still work" if default_ok and "default" not in failing
                 else "")
        lines.append(f"result: NOT ready: {', '.join(failing)} failed (see the fix above){works}")
    return "\n".join(lines)


# ---- CLI ---------------------------------------------------------------------------------

def configure_parser(p: argparse.ArgumentParser) -> None:
    optional = [k for k in CHECKS if k != "default"]
    p.add_argument("--require", action="append", default=[], choices=optional, metavar="PART",
                   help=f"also fail (exit 1) when PART only warns: {', '.join(optional)} (repeatable)")
    p.add_argument("--only", action="append", default=None, choices=list(CHECKS), metavar="PART",
                   help="run only these checks (the default path is always checked)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--server", default=None, help="check this remote stylizer (`stylecam serve` URL)")
    p.add_argument("--token-file", default=None, help="token file for --server")


def command(args) -> int:
    required = list(dict.fromkeys(args.require))
    if getattr(args, "server", None):
        REMOTE_TARGET.update(server=args.server, token_file=args.token_file)
    parts = None
    if args.only:
        parts = list(dict.fromkeys(["default", *args.only, *required]))
    t0 = time.monotonic()
    results = run_checks(parts)
    code = exit_code(results, required)
    if args.json:
        print(json.dumps({"ok": code == 0, "required": ["default", *required],
                          "seconds": round(time.monotonic() - t0, 2),
                          "checks": [asdict(c) for c in results]}, indent=2))
    else:
        print(format_report(results, required))
    return code
