"""The installers: the Linux menu entry, install/uninstall in a throw-away HOME and prefix (root
steps and the torch download in dry-run form), the torch choice, and the frozen-app smoke script.

Everything runs the real scripts. Two things are stood in for, because this machine has neither:
an NVIDIA driver (a stand-in ``nvidia-smi`` that prints a driver version) and a frozen build
(the smoke script is pointed at launchers of the unfrozen app; ``make package`` does the real one).
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINUX = REPO / "installer" / "linux"
VENV_BIN = Path(sys.executable).parent
TORCH_VERSION = next(line.split("==", 1)[1].strip()
                     for line in (REPO / "installer" / "constraints.txt").read_text().splitlines()
                     if line.startswith("torch=="))
CPU_SPEC = f"torch=={TORCH_VERSION} --index-url https://download.pytorch.org/whl/cpu"
CUDA_SPEC = f"torch=={TORCH_VERSION} --index-url https://download.pytorch.org/whl/cu130"
ROOT_FILES = ("/etc/modprobe.d/stylecam-v4l2loopback.conf", "/etc/modules-load.d/stylecam.conf")
OPTIONS = "options v4l2loopback devices=1 exclusive_caps=1 card_label=stylecam"
ICON_SIZES = (16, 22, 24, 32, 48, 64, 128, 256)

needs_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux installer")


def validate(*paths: Path) -> subprocess.CompletedProcess:
    tool = shutil.which("desktop-file-validate")
    if tool is None:
        pytest.skip("desktop-file-validate is missing (Debian package desktop-file-utils; .ci/run installs it)")
    return subprocess.run([tool, *map(str, paths)], capture_output=True, text=True)


def fake_nvidia_smi(tmp_path: Path, driver: str | None, name: str = "NVIDIA H100 80GB HBM3") -> Path:
    """An nvidia-smi that answers the two queries pick_torch.sh makes (or fails like one whose
    driver is not loaded)."""
    path = tmp_path / "nvidia-smi"
    if driver is None:
        body = ('echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver."\n'
                "exit 9\n")
    else:
        body = (f'case "$*" in *driver_version*) echo "{driver}" ;; *name*) echo "{name}" ;; '
                '*) exit 2 ;; esac\n')
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("XDG_", "STYLECAM_", "HF_")) and k not in ("NVIDIA_SMI", "PYTHON")}
    env.update(HOME=str(home), NVIDIA_SMI=str(home / "no-nvidia-smi"), LC_ALL="C.UTF-8")
    env.update(extra)
    return env


def run_script(script: Path, *args: str, env: dict[str, str], stdin: str | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], env=env, input=stdin if stdin is not None else "",
                          capture_output=True, text=True, timeout=timeout)


def files_under(*roots: Path) -> set[Path]:
    return {p for root in roots for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def desktop_keys(path: Path, group: str = "Desktop Entry") -> dict[str, str]:
    keys, current = {}, None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("["):
            current = line.strip("[]")
        elif "=" in line and current == group:
            k, v = line.split("=", 1)
            keys[k] = v
    return keys


def exec_argv(value: str) -> list[str]:
    """An Exec value as the launcher's argv: the string unescape, then the quoting rules (for
    the characters the installer quotes, shlex's double-quote handling is the same)."""
    return shlex.split(value.replace("\\\\", "\\"))


# ---- the menu entry --------------------------------------------------------------------------

def test_desktop_file_validates():
    done = validate(LINUX / "stylecam.desktop")
    assert done.returncode == 0, done.stdout + done.stderr
    keys = desktop_keys(LINUX / "stylecam.desktop")
    assert keys["Exec"] == "stylecam-tray" and keys["Icon"] == "stylecam"
    assert "AudioVideo" in keys["Categories"].split(";")


def test_validator_rejects_a_broken_entry(tmp_path):
    # The validation above means something: an unregistered category fails it.
    bad = tmp_path / "stylecam.desktop"
    bad.write_text((LINUX / "stylecam.desktop").read_text().replace("AudioVideo;Video;", "Videos;"))
    done = validate(bad)
    assert done.returncode != 0
    assert "Videos" in done.stdout + done.stderr


# ---- the torch choice ------------------------------------------------------------------------

@pytest.mark.parametrize("driver, expected, note", [
    ("580.65.06", CUDA_SPEC, "CUDA 13.0"),
    ("590.12", CUDA_SPEC, "CUDA 13.0"),
    ("550.54.15", CPU_SPEC, "older than the 580"),
    (None, CPU_SPEC, "no working NVIDIA GPU"),
    ("missing", CPU_SPEC, "no working NVIDIA GPU"),
])
@needs_linux
def test_pick_torch(tmp_path, driver, expected, note):
    smi = tmp_path / "absent" if driver == "missing" else fake_nvidia_smi(tmp_path, driver)
    env = clean_env(tmp_path, NVIDIA_SMI=str(smi))
    done = subprocess.run([str(REPO / "installer" / "pick_torch.sh")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected
    assert note in done.stderr


def test_pick_torch_respects_override(tmp_path):
    spec = "torch==2.11.0 --index-url https://download.pytorch.org/whl/cu126"
    env = clean_env(tmp_path, NVIDIA_SMI=str(fake_nvidia_smi(tmp_path, "580.1")), STYLECAM_TORCH=spec)
    done = subprocess.run([str(REPO / "installer" / "pick_torch.sh"), "--quiet"], env=env,
                          capture_output=True, text=True)
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, spec, "")


def load_torch_wanted():
    import importlib.util

    spec = importlib.util.spec_from_file_location("torch_wanted", REPO / "installer" / "torch_wanted.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("spec, installed, explicit, verdict", [
    (CUDA_SPEC, None, False, "install"),
    # picked for this machine: only a CPU build gives way, to a CUDA one (a driver came since)
    (CUDA_SPEC, f"{TORCH_VERSION}+cpu", False, "replace"),
    (CPU_SPEC, f"{TORCH_VERSION}+cpu", False, "keep"),
    (CPU_SPEC, f"{TORCH_VERSION}+cu126", False, "keep"),     # never a chosen CUDA build for the CPU one
    (CUDA_SPEC, f"{TORCH_VERSION}+cu126", False, "keep"),
    (f"torch=={TORCH_VERSION}", f"{TORCH_VERSION}+cpu", False, "keep"),  # a local wheel of the pin
    # named by the user: another version or another build gives way
    (CUDA_SPEC, f"{TORCH_VERSION}+cpu", True, "replace"),
    (CPU_SPEC, f"{TORCH_VERSION}+cu130", True, "replace"),
    (CUDA_SPEC, f"{TORCH_VERSION}+cu130", True, "keep"),
    (CUDA_SPEC, "2.11.0+cu130", True, "replace"),
    ("torch==2.11.0", "2.11.0+cu130", True, "keep"),
])
def test_torch_wanted_decides_when_setup_replaces_torch(spec, installed, explicit, verdict):
    assert load_torch_wanted().decide(spec, installed, explicit).split(":")[0] == verdict


def fake_venv(root: Path, torch_version: str) -> tuple[Path, Path]:
    """A venv whose python has a stand-in torch of ``torch_version`` and whose pip only logs
    (pip's downloads are what cannot run here); everything else is the real interpreter."""
    site = root / "site"
    site.mkdir(parents=True)
    (site / "torch.py").write_text(f"__version__ = {torch_version!r}\n")
    log = root / "pip.log"
    python = root / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f"""#!/bin/sh
if [ "$1" = -m ] && [ "$2" = pip ]; then
  shift 2; [ "$1" = --disable-pip-version-check ] && shift; echo "pip $*" >> '{log}'; exit 0
fi
PYTHONPATH='{site}' exec '{sys.executable}' "$@"
""")
    python.chmod(0o755)
    return root / "venv", log


@needs_linux
@pytest.mark.parametrize("driver, explicit, replaced", [
    ("580.65.06", None, CUDA_SPEC),   # the doctor's GPU fix: the driver came, run the set-up again
    (None, None, None),               # no GPU: the CPU build stays
    (None, CUDA_SPEC, CUDA_SPEC),     # STYLECAM_TORCH names another build
    (None, CPU_SPEC, None),           # ... or the one installed
])
def test_setup_venv_replaces_a_cpu_torch_when_a_gpu_build_is_wanted(tmp_path, driver, explicit, replaced):
    venv, log = fake_venv(tmp_path, f"{TORCH_VERSION}+cpu")
    extra = {"STYLECAM_VENV": str(venv)}
    if driver is not None:
        extra["NVIDIA_SMI"] = str(fake_nvidia_smi(tmp_path, driver))
    if explicit is not None:
        extra["STYLECAM_TORCH"] = explicit
    done = run_script(REPO / "installer" / "setup_venv.sh", env=clean_env(tmp_path, **extra))
    assert done.returncode == 0, done.stdout + done.stderr
    calls = log.read_text().splitlines()
    torch_calls = [c for c in calls if "torch" in c.split("-e")[0]]
    if replaced is None:
        assert torch_calls == [] and "instead" not in done.stdout
    else:
        assert torch_calls == ["pip uninstall -q -y torch", f"pip install {replaced}"]
        assert f"installing {replaced} instead" in done.stdout
    assert any(c.startswith("pip install -c ") and c.endswith("[test]") for c in calls)  # stylecam itself


# ---- install / uninstall ---------------------------------------------------------------------

@pytest.fixture
def box(tmp_path):
    """A fresh, container-like user: an empty HOME and a prefix whose path has a space."""
    home = tmp_path / "home"
    prefix = tmp_path / "my prefix"
    home.mkdir()
    prefix.mkdir()
    return home, prefix


def expected_files(home: Path, prefix: Path, autostart: bool) -> set[Path]:
    share = prefix / "share"
    out = {prefix / "bin" / "stylecam-tray", prefix / "bin" / "stylecam",
           share / "applications" / "stylecam.desktop",
           share / "icons" / "hicolor" / "scalable" / "apps" / "stylecam.svg",
           share / "stylecam" / "install-manifest"}
    out |= {share / "icons" / "hicolor" / f"{n}x{n}" / "apps" / "stylecam.png" for n in ICON_SIZES}
    if autostart:
        out.add(home / ".config" / "autostart" / "stylecam.desktop")
    return out


@needs_linux
def test_install_dry_run_then_uninstall(box):
    home, prefix = box
    # Files of other programs in the folders stylecam writes to must survive the uninstall.
    others = [prefix / "share" / "applications" / "other.desktop", home / ".config" / "autostart" / "other.desktop"]
    for p in others:
        p.parent.mkdir(parents=True)
        p.write_text("not stylecam\n")
    root_before = {p: Path(p).exists() for p in ROOT_FILES}
    env = clean_env(home)
    done = run_script(LINUX / "install.sh", "--prefix", str(prefix), "--dry-run", "--yes", "--autostart",
                      "--pkg", "apt", env=env)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr

    # Every root step is printed, in order, and none is run.
    lines = out.splitlines()
    steps = [
        "[dry-run] would run as root: ",  # apt-get update
        "apt-get install -y v4l2loopback-dkms v4l2loopback-utils",
        "[dry-run] would write as root: /etc/modprobe.d/stylecam-v4l2loopback.conf",
        f"[dry-run]     {OPTIONS}",
        "[dry-run] would write as root: /etc/modules-load.d/stylecam.conf",
        "[dry-run]     v4l2loopback",
        "modprobe v4l2loopback",
    ]
    at = 0
    for step in steps:
        at = next((i for i in range(at, len(lines)) if step in lines[i] and lines[i].startswith("[dry-run]")), None)
        assert at is not None, f"no dry-run line with {step!r} (in order) in:\n{out}"
        at += 1
    assert "running as root" not in out
    assert {p: Path(p).exists() for p in ROOT_FILES} == root_before
    # The venv (a torch download) is printed too, with the torch build for this machine (CPU).
    venv = prefix / "lib" / "stylecam" / "venv"
    want = (f"[dry-run] would run: STYLECAM_VENV='{venv}' STYLECAM_TORCH='{CPU_SPEC}' "
            f"bash '{REPO}/installer/setup_venv.sh'")
    assert want in lines
    assert not venv.exists()

    # The per-user files, exactly.
    written = files_under(home, prefix) - set(others)
    assert written == expected_files(home, prefix, autostart=True)
    launcher = prefix / "bin" / "stylecam-tray"
    assert launcher.stat().st_mode & stat.S_IXUSR
    assert f"exec '{venv}/bin/stylecam-tray' \"$@\"" in launcher.read_text()
    entry = prefix / "share" / "applications" / "stylecam.desktop"
    autostart = home / ".config" / "autostart" / "stylecam.desktop"
    done_v = validate(entry, autostart)
    assert done_v.returncode == 0, done_v.stdout + done_v.stderr
    keys = desktop_keys(entry)
    assert exec_argv(keys["Exec"]) == [str(launcher)]
    assert exec_argv(desktop_keys(entry, "Desktop Action preview")["Exec"]) == [str(launcher), "--preview"]
    # This prefix is not where menus look, so the icon is named by path (and the output says so).
    assert keys["Icon"] == str(prefix / "share" / "icons" / "hicolor" / "scalable" / "apps" / "stylecam.svg")
    assert "menus will not list stylecam" in out
    auto = desktop_keys(autostart)
    assert auto["X-GNOME-Autostart-enabled"] == "true" and exec_argv(auto["Exec"]) == [str(launcher)]
    assert "[Desktop Action" not in autostart.read_text()
    for n in ICON_SIZES:
        src = REPO / "icons" / "png" / f"stylecam-{n}.png"
        src = src if src.exists() else REPO / "icons" / "png" / f"stylecam-running-{n}.png"
        assert (prefix / "share" / "icons" / "hicolor" / f"{n}x{n}" / "apps" / "stylecam.png").read_bytes() \
            == src.read_bytes()

    done = run_script(LINUX / "uninstall.sh", "--prefix", str(prefix), "--yes", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert files_under(home, prefix) == set(others)
    # Folders the installer made are gone; those that were there before stay.
    assert not (prefix / "bin").exists() and not (prefix / "share" / "icons").exists()
    assert not (prefix / "share" / "stylecam").exists()
    assert (prefix / "share" / "applications").is_dir() and (home / ".config" / "autostart").is_dir()


@needs_linux
def test_install_picks_cuda_torch_where_a_driver_answers(box):
    home, prefix = box
    env = clean_env(home, NVIDIA_SMI=str(fake_nvidia_smi(home, "580.65.06")))
    done = run_script(LINUX / "install.sh", "--prefix", str(prefix), "--dry-run", "--yes",
                      "--no-virtual-camera", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"STYLECAM_TORCH='{CUDA_SPEC}'" in done.stdout
    assert "v4l2loopback" not in done.stdout
    assert not (home / ".config" / "autostart").exists()  # --yes takes the default: no autostart


@pytest.fixture
def borrowed_venv(tmp_path):
    """An environment that already has stylecam: links to this test run's own scripts (so the
    uninstaller, which must keep a venv it did not create, can do no harm to the real one)."""
    venv = tmp_path / "existing venv"
    (venv / "bin").mkdir(parents=True)
    for name in ("stylecam-tray", "stylecam"):
        target = VENV_BIN / name
        if not target.exists():
            pytest.skip(f"{target} is missing: stylecam is not installed in this environment")
        (venv / "bin" / name).symlink_to(target)
    return venv


@needs_linux
def test_install_asks_before_root_and_reuses_a_venv(box, borrowed_venv):
    home, prefix = box
    env = clean_env(home)
    # A launcher of another program where stylecam's goes: kept aside and put back.
    theirs = prefix / "bin" / "stylecam"
    theirs.parent.mkdir()
    theirs.write_text("#!/bin/sh\necho theirs\n")
    done = run_script(LINUX / "install.sh", "--prefix", str(prefix), "--venv", str(borrowed_venv),
                      "--no-autostart", "--pkg", "apt", env=env, stdin="n\nn\n")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert f"reusing the environment at {borrowed_venv}" in out
    assert "Run these steps as root now? [y/N]" in out
    assert "virtual camera not set up" in out
    assert "running as root" not in out and "[dry-run]" not in out
    assert (prefix / "bin" / "stylecam.stylecam-backup").read_text() == "#!/bin/sh\necho theirs\n"

    # The launcher really starts the installed program.
    styles = subprocess.run([str(prefix / "bin" / "stylecam"), "styles"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert styles.returncode == 0, styles.stderr
    assert "oil" in styles.stdout and "toon" in styles.stdout

    done = run_script(LINUX / "uninstall.sh", "--prefix", str(prefix), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert files_under(home, prefix) == {theirs}
    assert theirs.read_text() == "#!/bin/sh\necho theirs\n"
    assert (borrowed_venv / "bin" / "stylecam-tray").is_symlink()  # not ours: kept


@needs_linux
def test_install_without_an_answer_runs_no_root_step(box, borrowed_venv):
    home, prefix = box
    done = run_script(LINUX / "install.sh", "--prefix", str(prefix), "--venv", str(borrowed_venv),
                      "--pkg", "apt", env=clean_env(home), stdin="")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no answer (not interactive): nothing was run as root; pass --yes" in done.stderr
    assert "running as root" not in done.stdout
    assert not (home / ".config" / "autostart").exists()


@needs_linux
def test_uninstall_undoes_recorded_root_steps(box):
    home, prefix = box
    env = clean_env(home)
    done = run_script(LINUX / "install.sh", "--prefix", str(prefix), "--dry-run", "--yes", env=env)
    assert done.returncode == 0, done.stderr
    manifest = prefix / "share" / "stylecam" / "install-manifest"
    # What a real (root) install appends, as v4l2loopback.sh records it.
    recorded = ["root-package apt v4l2loopback-dkms v4l2loopback-utils",
                f"root-file {ROOT_FILES[0]}", f"root-file {ROOT_FILES[1]}", "root-module v4l2loopback"]
    with manifest.open("a") as f:
        f.write("\n".join(recorded) + "\n")

    done = run_script(LINUX / "uninstall.sh", "--prefix", str(prefix), "--dry-run", "--yes", env=env)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    for step in (f"rm -f {ROOT_FILES[0]}", f"rm -f {ROOT_FILES[1]}", "modprobe -r v4l2loopback",
                 "apt-get remove -y v4l2loopback-dkms v4l2loopback-utils"):
        assert any(line.startswith("[dry-run] would run as root: ") and line.endswith(step)
                   for line in out.splitlines()), f"{step!r} not printed:\n{out}"
    # The per-user files are gone; the root steps were only printed, so their record stays.
    assert files_under(home, prefix) == {manifest}
    assert [line for line in manifest.read_text().splitlines() if line.startswith("root-")] == recorded

    done = run_script(LINUX / "uninstall.sh", "--prefix", str(prefix), "--dry-run", "--yes", "--keep-package",
                      env=env)
    assert done.returncode == 0
    assert "modprobe -r v4l2loopback" in done.stdout and "apt-get remove" not in done.stdout


@needs_linux
def test_bad_input_gets_one_clear_message(box):
    home, prefix = box
    env = clean_env(home)
    done = run_script(LINUX / "install.sh", "--frobnicate", env=env)
    assert done.returncode == 2 and "unknown option --frobnicate" in done.stderr
    done = run_script(LINUX / "install.sh", "--prefix", str(prefix), "--dry-run", env={**env, "SUDO_USER": "me"})
    if os.geteuid() == 0:
        assert done.returncode == 2 and "not with sudo" in done.stderr
    done = run_script(LINUX / "uninstall.sh", "--prefix", str(prefix), env=env)
    assert done.returncode == 1
    assert f"no stylecam installation under {prefix}" in done.stderr
    done = run_script(REPO / "installer" / "package.sh", "--out", str(REPO / "dist"), env=env)
    assert done.returncode == 2 and "inside the repository" in done.stderr


def test_scripts_pass_shellcheck():
    scripts = sorted(REPO.glob("installer/**/*.sh"))
    assert len(scripts) >= 7
    for script in scripts:
        syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert syntax.returncode == 0, f"{script}: {syntax.stderr}"
    tool = shutil.which("shellcheck")
    if tool is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck; bash -n passed)")
    # setup_venv.sh's "$here[test]" is a false positive (SC1087: it reads as an array index).
    checked = [s for s in scripts if s.name != "setup_venv.sh"]
    done = subprocess.run([tool, "-x", "-S", "warning", *map(str, checked)], cwd=REPO, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout


# ---- the frozen-app smoke script -------------------------------------------------------------

def stand_in_app(tmp_path: Path, tray_body: str | None = None) -> Path:
    """A folder laid out like the PyInstaller build, whose programs are this environment's."""
    app = tmp_path / "dist" / "stylecam"
    app.mkdir(parents=True)
    for name in ("stylecam-tray", "stylecam"):
        body = tray_body if (name == "stylecam-tray" and tray_body) else f'exec "{VENV_BIN / name}" "$@"\n'
        (app / name).write_text("#!/bin/sh\n" + body)
        (app / name).chmod(0o755)
    (app / ".stylecam-flavor").write_text("classic\n")  # no tiny diffusion run here (that is slow)
    # Where the frozen app keeps its icons (the smoke script checks they are there).
    shutil.copytree(REPO / "icons", app / "_internal" / "stylecam" / "icons")
    return app


@needs_linux
@pytest.mark.slow
def test_smoke_script_passes_a_working_app(tmp_path):
    if not (VENV_BIN / "stylecam-tray").exists():
        pytest.skip("stylecam-tray is not installed in this environment")
    app = stand_in_app(tmp_path)
    done = subprocess.run(["bash", str(REPO / "installer" / "smoke_frozen.sh"), str(app), "2"],
                          env=clean_env(tmp_path), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "smoke: ready:" in done.stdout and done.stdout.rstrip().endswith("smoke: ok")


@needs_linux
def test_smoke_script_fails_on_fatal_lines(tmp_path):
    # A frozen app that lacks a module: it logs the traceback, then exits 1.
    broken = ('mkdir -p "$STYLECAM_LOG_DIR"\n'
              'echo "2026-01-01 00:00:00,000 INFO    MainThread stylecam.desktop: streaming demo through oil" '
              '>> "$STYLECAM_LOG_DIR/stylecam.log"\n'
              'echo "Traceback (most recent call last):" >&2\n'
              'echo "ModuleNotFoundError: No module named \'stylecam.core.stylize.classic\'" >&2\n'
              "exit 1\n")
    app = stand_in_app(tmp_path, tray_body=broken)
    done = subprocess.run(["bash", str(REPO / "installer" / "smoke_frozen.sh"), str(app), "1"],
                          env=clean_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "exited with code 1" in done.stderr
    assert "No module named 'stylecam.core.stylize.classic'" in done.stderr


@needs_linux
@pytest.mark.slow
def test_smoke_script_fails_without_the_icons(tmp_path):
    # The tray falls back to colour swatches without icons, so only the smoke script notices.
    if not (VENV_BIN / "stylecam-tray").exists():
        pytest.skip("stylecam-tray is not installed in this environment")
    app = stand_in_app(tmp_path)
    shutil.rmtree(app / "_internal")
    done = subprocess.run(["bash", str(REPO / "installer" / "smoke_frozen.sh"), str(app), "1"],
                          env=clean_env(tmp_path), capture_output=True, text=True, timeout=180)
    assert done.returncode == 1
    assert "the icons are not bundled" in done.stderr
