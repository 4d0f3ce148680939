"""Turn a failure into a notification: a short title and a message that says what to do.

The fix texts come from :mod:`stylecam.core.fix_texts` (the same words ``stylecam doctor`` prints);
when a build has no doctor, a plain message stands in. Errors from core already say what to do
in most cases: the doctor's text is added only when the message does not hold it yet.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

TITLES = {
    "virtual_camera": "Virtual camera unavailable",
    "mjpeg": "MJPEG stream unavailable",
    "camera": "Camera unavailable",
    "screen": "Screen capture unavailable",
    "file": "Cannot play the video file",
    "source": "Source unavailable",
}

FALLBACK_FIXES = {
    "virtual_camera": ("Install and load a virtual camera driver (Linux: v4l2loopback, "
                       "'sudo modprobe v4l2loopback exclusive_caps=1'; Windows and macOS: OBS Studio "
                       "with its Virtual Camera), then switch the output on again. Run 'stylecam doctor' "
                       "for details. The stream goes on to the preview and other outputs."),
    "camera": ("Check that the camera is plugged in and not in use by another app, and that this "
               "user may open it (Linux: the 'video' group). Run 'stylecam doctor' to list cameras."),
    "screen": "Screen capture needs an X11 or Windows/macOS desktop; run 'stylecam doctor' for details.",
}


def _doctor_fix(kind: str, error: BaseException, spec: str | None) -> str | None:
    """The doctor's fix text for ``kind``, or None when this build has no doctor."""
    try:
        from stylecam.core import fix_texts
    except ImportError:
        return None
    try:
        if kind == "virtual_camera":
            return fix_texts.virtualcam_fix(error)
        if kind == "screen":
            return fix_texts.screen_fix(error)
        if kind == "camera":
            arg = (spec or "").partition(":")[2].strip() or "0"
            return fix_texts.camera_fix(int(arg) if arg.isdigit() else arg, "unopenable")
    except Exception as e:  # a broken fix text must not hide the failure itself
        log.warning("the doctor's fix text for %s failed: %s", kind, e)
    return None


def source_kind(spec: str | None) -> str:
    kind = (spec or "").partition(":")[0].strip().lower()
    if kind in ("camera", "screen"):
        return kind
    if kind in ("file", "demo"):
        return "file"
    return "source"


def _core_error(error: BaseException) -> BaseException | None:
    """The SourceError/SinkError inside ``error`` (the runner wraps capture failures), if any."""
    from stylecam.core.sinks import SinkError
    from stylecam.core.sources import SourceError

    seen = 0
    while error is not None and seen < 5:
        if isinstance(error, (SourceError, SinkError, ValueError)):
            return error
        error = error.__cause__
        seen += 1
    return None


def describe_failure(what: str, error: BaseException, spec: str | None = None) -> tuple[str, str]:
    """(title, message) for a failed output (``virtual_camera``, ``mjpeg``) or source (``source``).

    Core's own errors (SourceError, SinkError, a bad spec's ValueError) already say what to do,
    with the doctor's words where it has some: their text is the message. Anything else (a
    driver's own exception) gets the doctor's fix text, or a plain one, added.
    """
    kind = source_kind(spec) if what == "source" else what
    core = _core_error(error)
    if core is not None:
        message = str(core).strip() or type(core).__name__
    else:
        message = str(error).strip() or type(error).__name__
        fix = _doctor_fix(kind, error, spec) or FALLBACK_FIXES.get(kind)
        if fix and fix.strip() not in message:
            message = f"{message}\n{fix.strip()}"
    if what == "mjpeg":
        message += "\nPick another port in Settings; the stream goes on to the other outputs."
    if what == "virtual_camera":
        message += ("\nThe stream goes on to the preview and the other outputs; switch Output > Virtual "
                    "camera on again once the driver is loaded.")
    return TITLES.get(kind, "stylecam"), message


#: One line per output problem kind, for the status line and the notification.
def describe_output_problem(name: str, error: BaseException) -> tuple[str, str, str]:
    """(title, reason, details) for an output that failed, in the app's words (no flags).

    ``reason`` is one short line (the menu, Settings and the guide show it); ``details`` the
    whole fix (Details, the log).
    """
    from .notify import no_cli_flags

    text = str(_core_error(error) or error).strip() or type(error).__name__
    first = text.splitlines()[0]
    if name == "virtual_camera":
        lowered = text.lower()
        if "loopback" in lowered or "no virtual camera" in lowered or "backend" in lowered:
            reason = "no virtual-camera driver is loaded"
        else:
            reason = "the virtual camera could not be opened"
        fix = None
        try:
            from stylecam.core import doctor

            # The driver's own words (the core error already wraps them in the CLI's paragraph).
            raw = error.__cause__ if error.__cause__ is not None else text
            if "No virtual camera is available" in str(raw):
                raw = None
            fix = doctor.virtualcam_fix(raw, audience="app")
        except Exception as e:  # a broken fix text must not hide the failure itself
            log.warning("the doctor's fix text for the virtual camera failed: %s", e)
        details = (fix or FALLBACK_FIXES["virtual_camera"]) + (
            "\n\nThe stream goes on to the preview and the other outputs. Once the driver is loaded, "
            "press Try again in the stylecam window (Show preview).")
        return TITLES["virtual_camera"], reason, no_cli_flags(details)
    if name == "mjpeg":
        reason = no_cli_flags(first)
        details = no_cli_flags(text) + "\n\nPick another port in Settings; the stream goes on to the other outputs."
        return TITLES["mjpeg"], reason, details
    if name == "record":
        reason = no_cli_flags(first)
        if getattr(error, "stylecam_stage", None) == "open":  # nothing was recorded
            return "Cannot record", reason, no_cli_flags(text) + "\n\nNothing was recorded: pick another file."
        return "Recording stopped", reason, no_cli_flags(text) + "\n\nWhat was recorded until then is kept."
    return TITLES.get(name, "stylecam"), no_cli_flags(first), no_cli_flags(text)
