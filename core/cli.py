"""The command line: ``stylecam run | styles | bench | doctor | models``.

Every user error ends in one line on stderr and exit code 2, never a traceback: the message
says what was wrong and what would work.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys

from . import __version__
# The helpers subcommands share live in cli_args, so no subcommand imports this module back.
from .cli_args import OneLineParser as _Parser
from .cli_args import UsageError, resolve_style  # noqa: F401  (cli.UsageError, cli.resolve_style: public)
from .cli_args import positive_float as _positive_float
from .cli_args import positive_int as _positive_int
from .cli_args import size as _size

#: Sub-commands that live in their own module: name -> module with ``configure_parser(p)`` and
#: ``command(args) -> int``. Modules that are absent in a build are simply not offered.
EXTERNAL_COMMANDS = {
    "bench": ("stylecam.core.bench", "measure stylizer speed (JSON rows + table)"),
    "gallery": ("stylecam.core.gallery", "render the input beside each style into one picture"),
    "doctor": ("stylecam.core.doctor", "check GPU, capture, cameras and virtual-camera drivers"),
    "models": ("stylecam.core.stylize.models_cli", "pull, list and build model bundles"),
    "serve": ("stylecam.core.remote.server", "stylize other machines' video over WebRTC (a GPU box)"),
    "quality": ("stylecam.core.quality", "measure flicker, shimmer, edges and strength of styles on clips"),
}


#: What `stylecam run` with nothing to do prints after its usage line.
RUN_EXAMPLES = """examples:
  stylecam run --source demo --style oil --sink file:demo-oil.mp4     # paint the bundled clip to a file
  stylecam run --source demo --style toon --sink mjpeg                # watch it at http://127.0.0.1:8090/
  stylecam run --source camera --style oil --sink virtualcam          # a painted webcam for Zoom, Meet, OBS
  stylecam styles                                                     # the style names"""

#: Sinks that are watched as they play: a file source feeding one is played at its own rate.
LIVE_SINKS = ("virtualcam", "mjpeg")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The run options, shared with anything else that starts a stream (bench, the tray)."""
    p.add_argument("--source", default=None,
                   help="screen[:N|:X,Y,W,H] | camera[:N|:PATH] | pattern | demo | file:PATH (default: pattern)")
    p.add_argument("--sink", action="append", default=None,
                   help="virtualcam[:WxH@FPS,mirror] | mjpeg[:PORT] | file:OUT.mp4 | file:DIR/ | null "
                        "(repeat for several; default: null)")
    p.add_argument("--style", default=None, help="style preset name (see `stylecam styles`)")
    p.add_argument("--backend", choices=["classic", "neural", "diffusion", "remote"], default=None,
                   help="stylizer backend (default: the style's; remote: a `stylecam serve` at --server)")
    p.add_argument("--server", default=None, help="remote backend: URL of a `stylecam serve`, e.g. http://gpu-box:8890")
    p.add_argument("--token-file", default=None, help="remote backend: file holding the server's token")
    p.add_argument("--bundle", default=None, help="diffusion model bundle: folder or hub id")
    p.add_argument("--frames", type=_positive_int, default=None, help="stop after N source frames")
    p.add_argument("--size", type=_size, default=None, help="engine/output size WxH (default: source size)")
    p.add_argument("--fps", type=_positive_float, default=None, help="output rate (default: the source's)")
    p.add_argument("--batch", type=_positive_int, default=None, help="frames per stylizer batch")
    p.add_argument("--devices", default=None,
                   help="diffusion: the GPUs to use: 0,1 (encoders on 0, U-Net on 1) | all (one engine per "
                        "GPU) | replicate:0,1 | split:0,1,2,3 (default: the first GPU, else the CPU)")
    p.add_argument("--compile", action="store_true",
                   help="diffusion: compile the models for the GPU (about 1.5x the frame rate; the first start "
                        "of each batch size takes a minute or two, later ones seconds)")
    p.add_argument("--loop", action="store_true",
                   help="loop a file source (implied, at the file's own rate, when an output is live)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output file or folder, or write through a symbolic link "
                        "(never the input itself)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="stylecam", description="A live stylized camera.")
    parser.add_argument("--version", action="version", version=f"stylecam {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser("run", help="stream a source through a style to sinks", epilog=RUN_EXAMPLES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(run)
    parser.run_parser = run

    sub.add_parser("styles", help="list style presets")

    for name, (module, help_text) in EXTERNAL_COMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            if e.name and module.startswith(e.name):
                continue  # not part of this build
            raise
        mod.configure_parser(sub.add_parser(name, help=help_text))
    return parser


def _kind(spec: str) -> str:
    return spec.partition(":")[0].strip().lower()


def _check_input_file(spec: str) -> None:
    """A source file that does not exist is bad input (exit 2), said before any work."""
    kind, _, arg = spec.partition(":")
    kind, arg = kind.strip().lower(), os.path.expanduser(arg.strip())
    if kind == "file" and arg and not os.path.exists(arg):
        raise UsageError(f"video file not found: {arg}")
    if kind == "camera" and arg and not arg.isdigit() and not arg.startswith("/dev/") and not os.path.exists(arg):
        raise UsageError(f"camera {arg!r}: no such file or device")


def even_size(size, sinks: list[str]):
    """``size`` with even sides when a video file is among ``sinks`` (its codec needs them),
    and the one note that says so; (size, None) when nothing changes."""
    if size is None or not any(s % 2 for s in size):
        return size, None
    videos = [s for s in sinks if _kind(s) == "file" and not s.endswith(("/", os.sep))
              and os.path.splitext(s)[1].lower() in (".mp4", ".avi", ".mkv")]
    if not videos:
        return size, None
    rounded = (size[0] - size[0] % 2, size[1] - size[1] % 2)
    note = (f"size {size[0]}x{size[1]} becomes {rounded[0]}x{rounded[1]}: the video codec of "
            f"{videos[0].partition(':')[2]} needs even sides")
    return rounded, note


def format_summary(summary: dict, style: str, outputs: str, live_outputs: bool) -> str:
    """The run's last line: frames, rate, latency, and what was dropped (only live outputs drop)."""
    line = (f"stylecam: {summary['frames_out']} frames, style {style}, {summary['fps_out']} fps out, "
            f"latency p50 {summary['latency_p50_ms']} ms -> {outputs}")
    dropped = summary.get("dropped") or 0
    if dropped:
        why = "the stylizer was slower than the source; live outputs show the newest frame"
        line += f"; {dropped} frame{'s' if dropped != 1 else ''} dropped ({why})"
    elif live_outputs:
        line += "; none dropped"
    return line


#: Signals that end a run the way Ctrl-C does: the file is finished and the outputs closed
#: (SIGTERM: logout, ``kill``, systemd, ``timeout``; SIGHUP: the terminal closed).
STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


def _input_path(source) -> str | None:
    """The file a source reads, if it reads one (a clip, or a file played as a camera)."""
    path = getattr(source, "path", None) or getattr(source, "device", None)
    return path if isinstance(path, str) else None


def _check_not_input(source, sinks) -> None:
    """An output that is the input (symlinks followed) would destroy the clip while reading it:
    refused always, --overwrite or not."""
    src = _input_path(source)
    if src is None or not os.path.exists(src):
        return
    for sink in sinks:
        out = getattr(sink, "path", None)
        if not out:
            continue
        same = os.path.realpath(out) == os.path.realpath(src)
        if not same and os.path.exists(out):
            try:
                same = os.path.samefile(out, src)
            except OSError:
                pass
        if same:
            raise UsageError(f"output {out} is the input {src}; write the result somewhere else")


def _stop_on_signals(runner):
    """Install handlers that stop ``runner`` cleanly; a second signal leaves at once (the MP4 is
    fragmented, so what was written still plays). Returns the previous handlers."""
    received: list[int] = []

    def handler(signum, frame):
        received.append(signum)
        if len(received) > 1:
            os._exit(128 + signum)
        runner.stop()

    previous = {}
    for sig in STOP_SIGNALS:
        try:
            previous[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):  # not the main thread (tests calling main() from a thread)
            pass
    return previous, received


def cmd_run(args) -> int:
    from .realtime import RealtimeSource
    from .runner import Runner, RunnerError, start_backend_compiled
    from .sinks import OutputRefused, SinkError, open_sink
    from .sources import SourceError, open_source
    from .stylize.base import BackendError

    remote = _remote_wanted(args)
    # A model bundle alone means its default diffusion style (as `serve --bundle` does).
    backend = "diffusion" if args.bundle and args.style is None and args.backend is None else args.backend
    style = resolve_style(args.style, None if remote else backend)  # a bad style name is said first
    _check_bundle_option(args.bundle, style, remote)
    if args.source is None and args.sink is None and args.frames is None:
        # Nothing asked for: a run of the test pattern into nothing, forever, helps no one.
        # (With --frames it is a finite check of the stylizer, as the tests and scripts use.)
        print(build_parser().run_parser.format_usage().rstrip(), file=sys.stderr)
        print("stylecam run: give a --source and a --sink, e.g.\n" + RUN_EXAMPLES.split("\n", 1)[1],
              file=sys.stderr)
        return 2
    devices = _devices(args.devices, style, remote)
    engine = _compile_option(args.compile, style, remote)
    source_spec = args.source or "pattern"
    sink_specs = args.sink or ["null"]
    _check_input_file(source_spec)
    live = [s for s in sink_specs if _kind(s) in LIVE_SINKS]
    size, note = even_size(args.size, sink_specs)
    if note:
        print(f"stylecam: note: {note}", file=sys.stderr)
    try:
        source = open_source(source_spec, size=size, fps=args.fps, loop=args.loop or bool(live))
        _check_not_input(source, [_PathOnly(s) for s in sink_specs])
        sinks = [open_sink(s, fps=args.fps, overwrite=args.overwrite) for s in sink_specs]
    except OutputRefused as e:
        raise UsageError(f"{e}; pass --overwrite to replace it") from None
    except ValueError as e:
        raise UsageError(str(e)) from None
    except (SourceError, SinkError) as e:  # e.g. no virtual-camera driver: said before any work
        print(f"stylecam: {e}", file=sys.stderr)
        return 1
    for sink in sinks:
        if getattr(sink, "url", None):
            print(f"stylecam: streaming at {sink.url}", flush=True)

    def on_event(event) -> None:
        # What the stream tells the user (an output that failed and came back, a stalled
        # source...): one line each, in the same form as the CLI's other messages.
        print(f"stylecam: {event.level}: {event.message}", file=sys.stderr, flush=True)

    # A decode error mid-clip and the like: the source says so and goes on.
    source.on_warning = lambda message: print(f"stylecam: warning: {message}", file=sys.stderr, flush=True)
    if not args.verbose:
        # The runner also logs each event; the lines above already said it.
        for name in ("stylecam.core.runner", "stylecam.core.sources", "stylecam.core.remote.client"):
            logging.getLogger(name).setLevel(logging.ERROR)
        # OpenCV's own warnings name its backends, not the user's problem; ours say it.
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        if remote:  # painted on a server; a local classic style while it cannot be reached
            from .stylize.base import create_backend

            backend = create_backend(style, server=args.server, token_file=args.token_file,
                                     exact=not source.live, on_event=on_event)
        else:
            # Out of memory at start: retried with a smaller batch, said through on_event.
            extra = {"devices": devices} if devices else {}
            if engine:
                extra["engine"] = engine

            def uncompiled(e: BackendError) -> None:  # the style still runs, uncompiled
                print(f"stylecam: warning: --compile failed ({e}); running without it", file=sys.stderr, flush=True)

            backend = start_backend_compiled(style, args.batch, bundle=args.bundle, on_event=on_event,
                                             output_size=size, on_uncompiled=uncompiled, **extra)
    except BackendError as e:
        print(f"stylecam: {e}", file=sys.stderr)
        return 1
    # What the run does, said once the stylizer has started (a failed start says only why).
    what = "the demo clip" if _kind(source_spec) == "demo" else source.name
    if live and not source.live:
        # A viewer watches it: the clip plays at its own rate and loops, like a camera.
        source = RealtimeSource(source, rate=args.fps)
        sent = f", {args.fps:g} frames a second of it" if args.fps else ""
        print(f"stylecam: {what} plays at its own speed{sent} and loops for {', '.join(live)}; "
              "Ctrl-C stops", file=sys.stderr, flush=True)
    if args.sink is None:
        print(f"stylecam: no --sink given: painting {what} in style {style.name} and discarding "
              "the frames (as --sink null does); add --sink file:out.mp4, --sink mjpeg or --sink virtualcam "
              "to see them" + ("; Ctrl-C stops" if source.live and args.frames is None else ""),
              file=sys.stderr, flush=True)
    # start_backend may have halved the batch (out of memory): never send more than it takes.
    batch = min(args.batch, backend.batch_size) if args.batch else None
    runner = Runner(source, backend, sinks, size=size, fps=args.fps, max_frames=args.frames,
                    batch_size=batch, on_event=on_event, style=style)
    # Ctrl-C, SIGTERM and SIGHUP stop the stream cleanly (files are finished) instead of
    # killing it mid-write.
    previous, received = _stop_on_signals(runner)
    try:
        summary = runner.run()
    except (RunnerError, SourceError, SinkError, BackendError) as e:
        print(f"stylecam: {e}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        remote_stats = backend.stats() if remote else None
        backend.close()
    if received:
        print(f"stylecam: stopped by {signal.Signals(received[0]).name}; outputs finished", file=sys.stderr)
    failed = set(map(id, runner.failed_sinks))
    code = 0
    for sink in sinks:
        failure = getattr(sink, "failure", None)
        if failure and id(sink) not in failed:  # a failure at close: the runner did not say it
            print(f"stylecam: output {sink.name} failed: {failure}", file=sys.stderr)
        if failure or (id(sink) in failed and not getattr(sink, "reopenable", False)):
            code = 1  # a recording that stopped early: scripts must not take it as complete
    if summary["frames_out"] == 0 and not received:
        print(f"stylecam: {source.name} gave no frame; nothing was written (is it a video, and does it "
              "have frames?)", file=sys.stderr)
        return 1
    outputs = ", ".join(s.name for s in sinks)
    print(format_summary(summary, _painted_with(style.name, remote_stats), outputs, bool(live)))
    for sink in sinks:
        path = getattr(sink, "path", None)
        if path and os.path.exists(path) and not getattr(sink, "failure", None):
            print(f"stylecam: output written to {os.path.abspath(path)}")
    if remote_stats:
        r = remote_stats
        if r.get("round_trip_p50_ms") is None:  # no frame came back from the server
            trip = "no frame came back"
        else:
            trip = f"round trip p50 {r['round_trip_p50_ms']} ms, p95 {r['round_trip_p95_ms']} ms"
        print(f"stylecam: remote {r['server']}: {trip}; {r['frames_local']} frames painted here")
    return code


def _painted_with(asked: str, remote: dict | None) -> str:
    """The style the summary names: the one asked for, unless a remote run painted with another
    (every frame here, with the fallback; or the server's own, where it could not start it)."""
    if not remote:
        return asked
    if remote.get("frames_back", 0) == 0 and remote.get("frames_local", 0) > 0:
        return f"{remote['fallback_style']} (painted here: no frame came back from the server)"
    served = remote.get("served_style")
    if served and served != asked:
        return f"{served} (the server's; {asked} was asked for)"
    return asked


class _PathOnly:
    """The path a ``file:`` sink spec names, before the sink is built (the input check comes
    first: building the sink would refuse an existing file with a less useful message)."""

    def __init__(self, spec: str):
        kind, _, arg = spec.partition(":")
        self.path = os.path.expanduser(arg) if kind.strip().lower() == "file" and arg else None


def _devices(spec: str | None, style, remote: bool) -> str | None:
    """``--devices`` checked before any work (a device that is not there is said at once)."""
    if spec is None:
        return None
    if remote:
        raise UsageError("--devices picks this machine's GPUs; with --server the server paints")
    if style.backend != "diffusion":
        raise UsageError(f"--devices picks the GPUs of diffusion styles; style {style.name!r} uses the "
                         f"{style.backend} backend")
    from .stylize.devices import parse_devices

    try:
        return str(parse_devices(spec))
    except ValueError as e:
        raise UsageError(str(e)) from None


def _check_bundle_option(bundle: str | None, style, remote: bool) -> None:
    """``--bundle`` is a diffusion model of this machine: refused where nothing would use it."""
    if not bundle:
        return
    if remote:
        raise UsageError("--bundle is a model for this machine; with --server the server paints "
                         "(start it with `stylecam serve --bundle ...`)")
    if style.backend != "diffusion":
        raise UsageError(f"--bundle gives a diffusion model; style {style.name!r} uses the {style.backend} "
                         "backend (pick an AI style, e.g. --style ai-oil, or leave --style out)")


def _compile_option(wanted: bool, style, remote: bool) -> dict | None:
    """``--compile`` as the diffusion backend's engine option, checked before any work."""
    if not wanted:
        return None
    if remote:
        raise UsageError("--compile is for this machine's GPU; with --server the server paints "
                         "(start it with `stylecam serve --compile`)")
    if style.backend != "diffusion":
        raise UsageError(f"--compile compiles diffusion styles; style {style.name!r} uses the {style.backend} backend")
    return {"mode": "compile"}


def _remote_wanted(args) -> bool:
    """True for ``--backend remote`` (which needs ``--server``) or a bare ``--server``."""
    if args.backend == "remote" and not args.server:
        raise UsageError("--backend remote needs --server URL (the address `stylecam serve` prints)")
    if args.server and args.backend not in (None, "remote"):
        raise UsageError(f"--server paints on a remote machine; it does not go with --backend {args.backend}")
    if args.token_file and not args.server:
        raise UsageError("--token-file goes with --server")
    return bool(args.server)


def cmd_styles(args) -> int:
    from .styles import load_styles, user_style_dir

    styles, warnings = load_styles()
    for w in warnings:
        print(f"stylecam: warning: {w}", file=sys.stderr)
    width = max(len(n) for n in styles)
    from .stylize.onnx_weights import unavailable_reason

    # Neural styles need a package that may not be installed: listed, marked, and the fix said once.
    neural_missing = unavailable_reason() if any(s.backend == "neural" for s in styles.values()) else None
    for style in sorted(styles.values(), key=lambda s: (s.backend, s.name)):
        desc = f" - {style.description}" if style.description else ""
        mark = " [unavailable]" if neural_missing and style.backend == "neural" else ""
        print(f"{style.name:<{width}}  {style.backend:<9}  {style.title}{desc}{mark}")
    if neural_missing:
        print(f"\n[unavailable]: {neural_missing}")
    print(f"\n(add your own as *.toml files in {user_style_dir()})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if args.command is None:
            parser.print_help()
            return 2
        from .quiet import quiet_decoder_logs
        from .runtime import configure_runtime

        quiet_decoder_logs()
        configure_runtime()
        if args.command == "run":
            return cmd_run(args)
        if args.command == "styles":
            return cmd_styles(args)
        module = importlib.import_module(EXTERNAL_COMMANDS[args.command][0])
        return module.command(args)
    except UsageError as e:
        print(f"stylecam: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
