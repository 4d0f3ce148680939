"""The fix texts: what to do when the virtual camera, the screen, a camera, the GPU or the model
weights are missing, in one place, so the CLI's errors (a SinkError from the virtual camera, a
SourceError from a camera or the screen), ``stylecam doctor``'s report and the desktop app's
notifications all say the same thing.

Contract: plain one-paragraph strings (no newlines), fit for a terminal line or a notification
body. A leaf module: it imports nothing of stylecam, so sources, sinks, the doctor and the desktop
can all import it without a cycle. Functions only read the machine (``/dev/video*``, sysfs,
``modinfo``); they never open a device.
"""

from __future__ import annotations

import glob
import os
import platform
import shutil
import subprocess

#: The modprobe line, shared by the fix paragraph, the report and docs/troubleshooting.md.
MODPROBE_LINE = "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=stylecam"
#: The whole command that fetches the default diffusion stack (what the models fix prints).
MODELS_PULL_COMMAND = "stylecam models pull sd-turbo"
#: The whole command that puts a CUDA build of torch into stylecam's environment: the set-up run
#: again sees the NVIDIA driver and replaces a CPU build (installer/torch_wanted.py); the
#: version comes from installer/constraints.txt, the build from installer/pick_torch.sh.
CUDA_TORCH_COMMAND = "bash installer/setup_venv.sh"


def _system(system: str | None) -> str:
    return system or platform.system()


def _one_line(error: BaseException | str | None) -> str:
    text = str(error or "").strip()
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def linux_v4l2loopback_state() -> dict:
    """What a Linux machine has of v4l2loopback: devices, module loaded, modules loadable at all."""
    release = platform.release()
    state = {
        "devices": sorted(glob.glob("/dev/video*"), key=lambda p: (len(p), p)),
        "loaded": os.path.isdir("/sys/module/v4l2loopback"),
        # Without /lib/modules/<release> no module can load: a container, or a VM booted with a
        # kernel that ships no modules. The driver must then be loaded on the host.
        "modules_loadable": os.path.isdir(f"/lib/modules/{release}"),
        "installed": None,
    }
    if state["modules_loadable"] and shutil.which("modinfo"):
        try:
            done = subprocess.run(["modinfo", "-n", "v4l2loopback"], capture_output=True, timeout=3)
            state["installed"] = done.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            pass
    return state


def first_sentences(error: BaseException | str | None) -> str:
    """pyvirtualcam's error, one line per backend cut to its first sentence (the rest is advice
    that the fix paragraph gives better)."""
    parts = []
    for line in str(error or "").splitlines():
        line = line.strip()
        if line:
            head, dot, _ = line.partition(". ")
            parts.append(head.rstrip("."))
    return "; ".join(parts)


#: The way around a missing virtual camera, for a terminal and for the tray app (whose text
#: names menus, never command-line flags).
_VIRTUALCAM_FALLBACK = {
    "cli": ("Until then `--sink mjpeg` streams to OBS (Media Source) or a browser with no driver "
            "at all; `stylecam doctor` checks again."),
    "app": ("Until then Output > MJPEG stream sends the picture to OBS (Media Source) or a browser "
            "with no driver at all."),
}


def virtualcam_fix(error: BaseException | str | None = None, system: str | None = None,
                   linux_state: dict | None = None, audience: str = "cli") -> str:
    """One paragraph: why no virtual camera could be opened and how to fix it on ``system``.

    ``audience`` ``app`` words the way around it for the tray app (menus, not flags).
    """
    system = _system(system)
    said = first_sentences(error)
    said = f" (pyvirtualcam: {said})" if said else ""
    fallback = _VIRTUALCAM_FALLBACK[audience]
    if system == "Linux":
        state = linux_state if linux_state is not None else linux_v4l2loopback_state()
        why_caps = ("(exclusive_caps=1 makes the device advertise capture-only caps, which Chrome, Meet "
                    "and other WebRTC apps require before they list a camera; card_label is the name "
                    "apps show)")
        if state.get("loaded"):
            text = ("On Linux the virtual camera is a v4l2loopback device; the module is loaded but no "
                    "device could be opened for writing: another program may hold it, you may lack "
                    "permission (join the 'video' group), or it was loaded without devices. Reload it "
                    f"with `sudo modprobe -r v4l2loopback && {MODPROBE_LINE}` {why_caps}.")
        else:
            text = ("On Linux the virtual camera is a v4l2loopback device and its kernel module is not "
                    + ("loaded (it is installed)" if state.get("installed") else "loaded")
                    + ": install it (Debian/Ubuntu: `sudo apt install v4l2loopback-dkms v4l2loopback-utils`; "
                    "Fedora: `sudo dnf install v4l2loopback`; Arch: `sudo pacman -S v4l2loopback-dkms`), "
                    f"then run `{MODPROBE_LINE}` {why_caps}.")
            if not state.get("modules_loadable", True):
                text += (f" This machine cannot load kernel modules (no /lib/modules/{platform.release()}: "
                         "a container or minimal VM): load the module on the host and pass /dev/videoN in.")
        return f"No virtual camera is available{said}. {text} {fallback}"
    if system == "Darwin":
        return (f"No virtual camera is available{said}. On macOS stylecam sends frames to the OBS "
                "virtual camera: install OBS Studio 30 or newer (https://obsproject.com), open it, "
                "click Start Virtual Camera once and allow the camera extension in System Settings > "
                "Privacy & Security, then stop the virtual camera and quit OBS (OBS has one virtual "
                f"camera; while OBS itself uses it, stylecam cannot). {fallback}")
    if system == "Windows":
        return (f"No virtual camera is available{said}. On Windows stylecam sends frames to the OBS "
                "virtual camera: install OBS Studio 30 or newer (https://obsproject.com), open it, "
                "click Start Virtual Camera once (this registers the camera), then stop it and quit "
                "OBS (OBS has one virtual camera; while OBS itself uses it, stylecam cannot; the "
                "Unity Capture driver is an alternative"
                + (": virtualcam:backend=unitycapture). " if audience == "cli" else "). ")
                + fallback)
    return f"No virtual camera is available{said}: pyvirtualcam has no backend for {system}. {fallback}"


def screen_fix(error: BaseException | str | None = None, system: str | None = None) -> str:
    """One paragraph: why the screen cannot be captured and what to do."""
    system = _system(system)
    said = _one_line(error)
    said = f" ({said})" if said else ""
    if system == "Linux":
        if not os.environ.get("DISPLAY"):
            wayland = " (this is a Wayland session without XWayland)" if os.environ.get("WAYLAND_DISPLAY") else ""
            return (f"Cannot capture the screen{said}: no X display, DISPLAY is not set{wayland}. Run "
                    "stylecam inside your desktop session (on Wayland, through XWayland, which most "
                    "desktops start by itself; it sees X11 windows only), or start a virtual screen "
                    "with `xvfb-run -a stylecam ...`; `--source camera` or `--source file:PATH` need "
                    "no screen.")
        return (f"Cannot capture the screen on DISPLAY={os.environ.get('DISPLAY')}{said}. Check that "
                "the display is running and that this user may connect to it (`xdpyinfo` should "
                "work; over ssh use `ssh -X` or `xhost +SI:localuser:$USER`); the screen must have "
                "24-bit colour (Xvfb: `-screen 0 1280x720x24`).")
    if system == "Darwin":
        return (f"Cannot capture the screen{said}. Allow screen recording for your terminal or "
                "stylecam in System Settings > Privacy & Security > Screen Recording, then restart it.")
    return f"Cannot capture the screen{said}. Make sure a desktop session is running and unlocked."


def camera_fix(device: int | str, reason: str, system: str | None = None) -> str:
    """One paragraph for a camera that cannot be opened at start.

    ``reason``: ``missing`` (no such device or file), ``unopenable`` (OpenCV cannot open it) or
    ``no-frames`` (opened but delivers nothing: usually another app holds it).
    """
    system = _system(system)
    what = f"camera {device}" if isinstance(device, int) else f"camera {device!r}"
    listing = "`stylecam doctor` lists the cameras it finds"
    if isinstance(device, str) and not device.startswith("/dev/"):
        if reason == "missing":
            return (f"Cannot open {what}: no such file or device. Give a camera number (camera:0) or an "
                    f"existing path; {listing}.")
        return f"Cannot open {what}: OpenCV cannot read it as video (unsupported or corrupt file)."
    if reason == "missing":
        return (f"Cannot open {what}: no such camera on this machine. Plug it in, or pick another "
                f"(camera:1, camera:/dev/video2); {listing}.")
    busy = ("close other apps that may use it (Zoom, Teams, a browser tab, OBS), then try again")
    perm = ""
    if system == "Linux":
        perm = " On Linux also check that you may read the device (`ls -l /dev/video*`; join the 'video' group)."
    elif system == "Darwin":
        perm = " On macOS allow camera access for your terminal in System Settings > Privacy & Security > Camera."
    elif system == "Windows":
        perm = " On Windows allow desktop apps to use the camera in Settings > Privacy > Camera."
    if reason == "no-frames":
        return (f"{what.capitalize()} opened but sends no frames: another app is probably using it; "
                f"{busy}.{perm} {listing.capitalize()}.")
    return f"Cannot open {what}: it is busy or not accessible; {busy}.{perm} {listing.capitalize()}."


def gpu_fix(system: str | None = None) -> str:
    system = _system(system)
    if system == "Darwin":
        return ("torch sees no Apple GPU (MPS): update macOS and torch. Classic styles need no GPU; "
                "diffusion styles run on the CPU, slowly.")
    return ("torch sees no CUDA GPU. Classic styles need none; diffusion styles run on the CPU, far "
            "below camera rate. With an NVIDIA card: install its driver (`nvidia-smi` should list "
            f"the card), then run `{CUDA_TORCH_COMMAND}` again in the stylecam folder: it sees the "
            "driver and replaces the CPU build of torch with the CUDA one (driver 580 or newer; "
            "for another build set STYLECAM_TORCH, see https://pytorch.org/get-started).")


def compiler_fix(system: str | None = None) -> str:
    """AI speed (compile mode) without a C compiler for Triton."""
    if _system(system) == "Windows":
        return ("AI speed (compiling the AI styles) needs Triton and a C compiler: install the "
                "`triton-windows` package and the Microsoft C++ Build Tools. Without them the AI "
                "styles run uncompiled.")
    return ("AI speed (compiling the AI styles) needs a C compiler for Triton: `sudo apt install "
            "build-essential` (Debian, Ubuntu) or your system's gcc, or name one in CC. Without it "
            "the AI styles run uncompiled.")


#: Reinstalling the environment: the fix for a broken install (a package that does not import).
REINSTALL_FIX = "Reinstall stylecam's environment: `bash installer/setup_venv.sh` (or `make venv`)."

#: What to do when no model weights are cached.
MODELS_FIX = (f"Diffusion styles need weights: fetch the default ones with `{MODELS_PULL_COMMAND}` (into "
              "the Hugging Face cache; other stacks: `stylecam models list`).")
