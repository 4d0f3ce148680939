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

#: Sub-commands that live in their own module: name -> module with ``configure_parser(p)`` and
#: ``command(args) -> int``. Modules that are absent in a build are simply not offered.
EXTERNAL_COMMANDS = {
    "bench": ("stylecam.core.bench", "measure stylizer speed (JSON rows + table)"),
    "gallery": ("stylecam.core.gallery", "render the input beside each style into one picture"),
    "doctor": ("stylecam.core.doctor", "check GPU, capture, cameras and virtual-camera drivers"),
    "models": ("stylecam.core.stylize.models_cli", "pull, list and build model bundles"),
}


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + error
        raise UsageError(message)


def _size(text: str):
    from .frames import parse_size

    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of 1 or more, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value <= 1000:
        raise argparse.ArgumentTypeError(f"expected a rate between 0 and 1000, got {value}")
    return value


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The run options, shared with anything else that starts a stream (bench, the tray)."""
    p.add_argument("--source", default="pattern",
                   help="screen[:N|:X,Y,W,H] | camera[:N|:PATH] | pattern | demo | file:PATH (default: pattern)")
    p.add_argument("--sink", action="append", default=None,
                   help="virtualcam[:WxH@FPS,mirror] | mjpeg[:PORT] | file:OUT.mp4 | file:DIR/ | null "
                        "(repeat for several; default: null)")
    p.add_argument("--style", default=None, help="style preset name (see `stylecam styles`)")
    p.add_argument("--backend", choices=["classic", "diffusion"], default=None,
                   help="stylizer backend (default: the style's)")
    p.add_argument("--bundle", default=None, help="diffusion model bundle: folder or hub id")
    p.add_argument("--frames", type=_positive_int, default=None, help="stop after N source frames")
    p.add_argument("--size", type=_size, default=None, help="engine/output size WxH (default: source size)")
    p.add_argument("--fps", type=_positive_float, default=None, help="output rate (default: the source's)")
    p.add_argument("--batch", type=_positive_int, default=None, help="frames per stylizer batch")
    p.add_argument("--loop", action="store_true", help="loop a file source")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output file or folder, or write through a symbolic link "
                        "(never the input itself)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="stylecam", description="A live stylized camera.")
    parser.add_argument("--version", action="version", version=f"stylecam {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser("run", help="stream a source through a style to sinks")
    add_run_arguments(run)

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


def resolve_style(style_name: str | None, backend: str | None):
    """The Style to run: by name, or the default for the backend. Raises UsageError."""
    from .styles import StyleError, find_style, load_styles

    styles, warnings = load_styles()
    for w in warnings:
        print(f"stylecam: warning: {w}", file=sys.stderr)
    if style_name is None:
        wanted = backend or "classic"
        candidates = [s for s in styles.values() if s.backend == wanted]
        if not candidates:
            raise UsageError(f"no style uses the {wanted} backend")
        style_name = "oil" if wanted == "classic" and "oil" in styles else candidates[0].name
    try:
        style = find_style(style_name, styles)
    except StyleError as e:
        raise UsageError(str(e)) from None
    if backend and style.backend != backend:
        raise UsageError(f"style {style.name!r} uses the {style.backend} backend, not {backend}; "
                         f"pick a {backend} style (see `stylecam styles`)")
    return style


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
    from .runner import Runner, RunnerError, start_backend
    from .sinks import OutputRefused, SinkError, open_sink
    from .sources import SourceError, open_source
    from .stylize.base import BackendError

    style = resolve_style(args.style, args.backend)
    try:
        source = open_source(args.source, size=args.size, fps=args.fps, loop=args.loop)
        _check_not_input(source, [_PathOnly(s) for s in (args.sink or [])])
        sinks = [open_sink(s, fps=args.fps, overwrite=args.overwrite) for s in (args.sink or ["null"])]
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
        for name in ("stylecam.core.runner", "stylecam.core.sources"):
            logging.getLogger(name).setLevel(logging.ERROR)
        # OpenCV's own warnings name its backends, not the user's problem; ours say it.
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        # Out of memory at start: retried with a smaller batch, said through on_event.
        backend = start_backend(style, args.batch, bundle=args.bundle, on_event=on_event)
    except BackendError as e:
        print(f"stylecam: {e}", file=sys.stderr)
        return 1
    runner = Runner(source, backend, sinks, size=args.size, fps=args.fps, max_frames=args.frames,
                    batch_size=args.batch, on_event=on_event)
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
    print(f"stylecam: {summary['frames_out']} frames, style {style.name}, "
          f"{summary['fps_out']} fps out, latency p50 {summary['latency_p50_ms']} ms -> {outputs}")
    for sink in sinks:
        path = getattr(sink, "path", None)
        if path and os.path.exists(path) and not getattr(sink, "failure", None):
            print(f"stylecam: output written to {os.path.abspath(path)}")
    return code


class _PathOnly:
    """The path a ``file:`` sink spec names, before the sink is built (the input check comes
    first: building the sink would refuse an existing file with a less useful message)."""

    def __init__(self, spec: str):
        kind, _, arg = spec.partition(":")
        self.path = os.path.expanduser(arg) if kind.strip().lower() == "file" and arg else None


def cmd_styles(args) -> int:
    from .styles import load_styles, user_style_dir

    styles, warnings = load_styles()
    for w in warnings:
        print(f"stylecam: warning: {w}", file=sys.stderr)
    width = max(len(n) for n in styles)
    for style in sorted(styles.values(), key=lambda s: (s.backend, s.name)):
        desc = f" - {style.description}" if style.description else ""
        print(f"{style.name:<{width}}  {style.backend:<9}  {style.title}{desc}")
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
        from .runtime import configure_runtime

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
