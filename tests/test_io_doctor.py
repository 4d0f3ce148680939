"""`stylecam doctor`: the real checks on this machine, exit codes, and the shared fix texts."""

from __future__ import annotations

import glob
import os
import json

import numpy as np
import pytest
import pyvirtualcam

from stylecam.core import cli, doctor

from reliability_helpers import real_virtualcam_works



def run_doctor(capsys, *args):
    rc = cli.main(["doctor", *args])
    return rc, capsys.readouterr().out


def test_report_on_this_machine(capsys, xvfb_display):
    rc, out = run_doctor(capsys)
    lines = out.splitlines()
    assert lines[0].startswith("stylecam doctor")
    assert any(line.startswith("[ok  ] default") for line in lines)
    assert any(line.startswith("[ok  ] screen") and "1 monitor" in line for line in lines)
    assert "monitor 1: 1280x720 at 0,0" in out
    import torch

    if not torch.cuda.is_available():
        assert "CUDA available: no" in out and f"torch {torch.__version__}" in out
    if not glob.glob("/dev/video*"):
        assert "[warn] camera     no camera found" in out
    assert "models     " in out and doctor.hub_cache_dir() in out
    if not real_virtualcam_works():
        assert "[FAIL] virtualcam" in out
        # The fix is the very paragraph `stylecam run --sink virtualcam` prints.
        fix = next(line for line in lines if "fix: No virtual camera" in line).split("fix: ", 1)[1]
        assert fix.startswith("No virtual camera is available (pyvirtualcam: ")
        if doctor.platform.system() == "Linux":
            assert doctor.MODPROBE_LINE in fix
    # A part that does not work here fails the report (exit 1) and the last line names it; a
    # missing optional part (no camera, no GPU) only warns.
    failed = [line.split()[1] for line in lines if line.startswith("[FAIL]")]
    if failed:
        assert rc == 1 and lines[-1] == (f"result: NOT ready: {', '.join(failed)} failed (see the fix above); "
                                         "classic styles to a file or MJPEG still work")
    else:
        assert rc == 0 and lines[-1].startswith("result: ready")


def test_required_parts_decide_the_exit_code(capsys, xvfb_display, monkeypatch):
    rc, out = run_doctor(capsys, "--only", "screen", "--require", "screen")
    assert rc == 0 and "[ok  ] screen" in out and "virtualcam" not in out
    monkeypatch.delenv("DISPLAY")
    rc, out = run_doctor(capsys, "--only", "screen", "--require", "screen")
    assert rc == 1 and "[FAIL] screen" in out and "DISPLAY is not set" in out
    assert out.splitlines()[-1].startswith("result: NOT ready")
    if not real_virtualcam_works():
        rc, out = run_doctor(capsys, "--require", "virtualcam", "--only", "virtualcam", "--json")
        report = json.loads(out)
        assert rc == 1 and report["ok"] is False and report["required"] == ["default", "virtualcam"]


def test_a_broken_default_path_fails(capsys, monkeypatch):
    from stylecam.core.stylize import base

    def broken(style, **options):
        raise base.BackendError("opencv is broken")

    monkeypatch.setattr(base, "create_backend", broken)
    rc, out = run_doctor(capsys, "--only", "default")
    assert rc == 1 and "[FAIL] default    the default path (classic style to a file) fails: opencv is broken" in out
    assert "installer/setup_venv.sh" in out


class WorkingCamera:
    """A pyvirtualcam backend that opens fine (a driver that is installed and loaded)."""

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        pass

    def send(self, frame):
        pass

    def close(self):
        pass

    def device(self):
        return "/dev/video42"

    def native_fourcc(self):
        return None


def test_virtualcam_status_per_backend(monkeypatch):
    monkeypatch.setitem(pyvirtualcam.camera.BACKENDS, "stylecam-working", WorkingCamera)
    check = doctor.check_virtualcam()
    assert check.status == "ok" and "stylecam-working" in check.summary
    assert "backend stylecam-working: works, device /dev/video42" in check.details


def test_model_cache_lists_known_bundles(tmp_path, monkeypatch):
    snap = tmp_path / "models--madebyollin--taesd" / "snapshots" / "0123abc"
    snap.mkdir(parents=True)
    blobs = tmp_path / "models--madebyollin--taesd" / "blobs"
    blobs.mkdir()
    (blobs / "f00d").write_bytes(b"x" * 1000)
    (tmp_path / "models--stabilityai--sd-turbo" / "snapshots").mkdir(parents=True)  # an aborted download
    monkeypatch.setattr(doctor, "KNOWN_BUNDLES", dict(doctor.KNOWN_BUNDLES))
    doctor.register_known_bundle("someone/edit-unet", "an edit U-Net the diffusion work adds")
    rows = {r["repo_id"]: r for r in doctor.model_cache_status(str(tmp_path))}
    assert rows["madebyollin/taesd"]["present"] and rows["madebyollin/taesd"]["bytes"] == 1000
    assert not rows["stabilityai/sd-turbo"]["present"]
    assert not rows["someone/edit-unet"]["present"]
    assert rows["madebyollin/taesd"]["damaged"] == []


def test_the_doctor_names_damaged_weights_in_the_cache(tmp_path, monkeypatch):
    """A download cut short: the hub counts the file present; the doctor reads its header."""
    import safetensors.numpy

    snap = tmp_path / "models--madebyollin--taesd" / "snapshots" / "0123abc"
    snap.mkdir(parents=True)
    weights = snap / "diffusion_pytorch_model.safetensors"
    safetensors.numpy.save_file({"w": np.zeros((64, 64), np.float32)}, weights)
    monkeypatch.setattr(doctor, "hub_cache_dir", lambda: str(tmp_path))
    monkeypatch.setattr(doctor, "KNOWN_BUNDLES", {"madebyollin/taesd": "VAE"})
    assert doctor.check_models().status == "ok"
    os.truncate(weights, weights.stat().st_size - 100)
    check = doctor.check_models()
    assert check.status == "warn" and "damaged files in madebyollin/taesd" in check.summary
    assert f"DAMAGED: {weights}" in check.details[0] and "stylecam models pull" in check.fix


@pytest.mark.parametrize("system", ["Linux", "Windows", "Darwin"])
def test_virtualcam_fix_is_one_paragraph_with_this_os_fix(system):
    state = {"devices": [], "loaded": False, "modules_loadable": True, "installed": False}
    text = doctor.virtualcam_fix(error="'x' backend: No device found. Did you run something?\n'y' backend: gone",
                                 system=system, linux_state=state)
    assert "\n" not in text and text.startswith("No virtual camera is available (pyvirtualcam: "
                                                "'x' backend: No device found; 'y' backend: gone)")
    assert "--sink mjpeg" in text and "stylecam doctor" in text
    if system == "Linux":
        assert "sudo apt install v4l2loopback-dkms v4l2loopback-utils" in text
        assert doctor.MODPROBE_LINE in text
        assert "capture-only caps" in text and "Chrome" in text
    else:
        assert "OBS Studio 30 or newer" in text and "Start Virtual Camera" in text


def test_linux_fix_follows_the_module_state():
    loaded = doctor.virtualcam_fix(system="Linux", linux_state={"loaded": True, "modules_loadable": True})
    assert "module is loaded but no device could be opened" in loaded
    assert f"sudo modprobe -r v4l2loopback && {doctor.MODPROBE_LINE}" in loaded
    container = doctor.virtualcam_fix(system="Linux", linux_state={"loaded": False, "modules_loadable": False})
    assert "cannot load kernel modules" in container and "on the host" in container
    installed = doctor.virtualcam_fix(system="Linux", linux_state={"loaded": False, "installed": True,
                                                                   "modules_loadable": True})
    assert "not loaded (it is installed)" in installed


def test_c_compiler_is_found_as_triton_finds_it(tmp_path, monkeypatch):
    # Triton builds its launchers with CC, else gcc, else clang: compile mode (AI speed) needs one.
    import stat

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(empty))
    assert doctor.c_compiler() is None
    gcc = empty / "gcc"
    gcc.write_text("#!/bin/sh\n")
    gcc.chmod(gcc.stat().st_mode | stat.S_IXUSR)
    assert doctor.c_compiler() == str(gcc)
    mine = tmp_path / "my-cc"
    mine.write_text("#!/bin/sh\n")
    mine.chmod(mine.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("CC", str(mine))
    assert doctor.c_compiler() == str(mine)
    monkeypatch.setenv("CC", str(tmp_path / "missing-cc"))
    assert doctor.c_compiler() is None
    # The fix says what to install, per system, in the user's terms.
    from stylecam.core.fix_texts import compiler_fix

    assert "build-essential" in compiler_fix("Linux") and "triton-windows" in compiler_fix("Windows")
