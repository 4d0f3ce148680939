"""Stylizer faults: exceptions in a batch, a stylizer that keeps failing, a style that cannot be
applied, out of memory at engine start (a real address-space limit, and the diffusion backend
on a simulated small GPU), missing or corrupt weights, corrupt or outdated style files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from stylecam.core import cli
from stylecam.core.runner import Runner, RunnerError, StylizerError, is_out_of_memory, start_backend
from stylecam.core.sources import Source
from stylecam.core.styles import builtin_styles, load_styles
from stylecam.core.stylize import bundle as B
from stylecam.core.stylize import diffusion
from stylecam.core.stylize.base import Backend, BackendError, create_backend

from reliability_helpers import EventLog, Recorder, figures, tiny_bundle, wait_until  # noqa: F401

STYLES = {s.name: s for s in builtin_styles()}


class Numbered(Source):
    live = False
    name = "numbered"

    def __init__(self, count, size=(48, 32)):
        self.count, self.size, self.n = count, size, 0
        self.rng = np.random.default_rng(3)

    def read(self):
        if self.n >= self.count:
            return None
        self.n += 1
        return self.rng.integers(0, 256, (self.size[1], self.size[0], 3), dtype=np.uint8)


class FailingOn(Backend):
    """The real classic stylizer, raising ``error`` on the batches (counted from 0) in ``fail``."""

    def __init__(self, style, fail, error=None, batch_size=2):
        self.inner = create_backend(style)
        self.name = "classic"
        self.batch_size = batch_size
        self.fail = fail
        self.error = error or RuntimeError("CUDA error: an illegal memory access was encountered")
        self.calls = 0
        #: Per frame sent, in order: True when it was part of a failed batch.
        self.failed_frames: list[bool] = []
        self.sizes: list[int] = []

    def set_style(self, style):
        self.inner.set_style(style)

    def process(self, images):
        k, self.calls = self.calls, self.calls + 1
        self.failed_frames += [k in self.fail] * len(images)
        self.sizes.append(len(images))
        if k in self.fail:
            raise self.error
        return self.inner.process(images)


def test_a_failed_batch_goes_out_unstyled_and_the_stylizer_is_retried():
    style = STYLES["toon"]
    backend = FailingOn(style, fail={2, 3})
    sink, log = Recorder(), EventLog()
    source = Numbered(20)
    summary = Runner(source, backend, [sink], on_event=log).run()
    assert sink.indices == list(range(20))  # every frame, in order
    reference = create_backend(style)
    source = Numbered(20)
    inputs = [source.read() for _ in range(20)]
    unstyled = backend.failed_frames
    assert len(unstyled) == 20 and 2 <= sum(unstyled) <= 4
    for i, (inp, out) in enumerate(zip(inputs, sink.images)):
        want = inp if unstyled[i] else reference.process([inp])[0]
        assert np.array_equal(out, want), i
    assert summary["passthrough"] == sum(unstyled) and summary["backend_errors"] == 2
    assert [(e.kind, e.message) for e in log.events] == [
        ("backend-failed", "the stylizer failed (CUDA error: an illegal memory access was encountered); "
                           "frames go out unstyled while it is retried"),
        ("backend-recovered", f"the stylizer works again ({sum(unstyled)} frames went out unstyled)")]


def test_a_stylizer_that_keeps_failing_stops_the_run_with_one_message_after_frames_went_on():
    backend = FailingOn(STYLES["toon"], fail=set(range(10, 1000)), error=ValueError("boom"))
    sink, log = Recorder(keep_images=False), EventLog()
    with pytest.raises(StylizerError) as err:
        Runner(Numbered(100), backend, [sink], on_event=log).run()
    assert str(err.value) == "the stylizer failed on 5 batches in a row: boom"
    assert isinstance(err.value, RunnerError) and isinstance(err.value.__cause__, ValueError)
    # 10 good batches, 4 failed ones passed through; the 5th failure in a row ends the run.
    assert backend.calls == 15 and sink.count == sum(backend.sizes[:-1])
    assert log.kinds() == ["backend-failed"] and sink.closed


def test_the_desktop_worker_still_recognises_its_own_backend_failure():
    """The tray's worker wraps its backend and falls back to another style when its wrapper's
    BackendFailure comes out of the runner: the runner's final error must still be one."""
    pytest.importorskip("PySide6")
    from stylecam.desktop.worker import BackendFailure, TrackingBackend

    style = STYLES["toon"]
    tracking = TrackingBackend(FailingOn(style, fail=set(range(1000))), style)
    with pytest.raises(BackendFailure) as err:
        Runner(Numbered(30), tracking, [Recorder()]).run()
    assert isinstance(err.value, StylizerError)
    assert "the classic style 'toon' failed: CUDA error" in str(err.value)


def test_cli_reports_a_stylizer_that_keeps_failing_in_one_line(monkeypatch, tmp_path, capsys):
    from stylecam.core.stylize.classic import ClassicBackend

    real = ClassicBackend.process
    calls = []

    def process(self, images):
        calls.append(len(images))
        if len(calls) > 3:  # after the warm-up and two good frames
            raise RuntimeError("driver reset")
        return real(self, images)

    monkeypatch.setattr(ClassicBackend, "process", process)
    out = tmp_path / "frames"
    rc = cli.main(["run", "--source", "pattern", "--size", "64x48", "--frames", "50", "--sink", f"file:{out}/"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err[-1] == "stylecam: the stylizer failed on 5 batches in a row: driver reset"
    assert len(list(out.glob("*.png"))) == 2 + 4  # two styled, four passed through, then the stop


def test_a_style_that_cannot_be_applied_keeps_the_previous_one():
    styles, _ = load_styles()
    backend = create_backend(styles["toon"])
    sink, log = Recorder(), EventLog()

    class Switch(Recorder):
        def write(self, frame):
            if frame.index == 3:
                runner.set_style(styles["ai-oil"])  # a diffusion style on the classic backend
            super().write(frame)

    runner = Runner(Numbered(10), backend, [sink, Switch()], on_event=log)
    runner.run()
    reference = create_backend(styles["toon"])
    inputs = Numbered(10)
    assert all(np.array_equal(out, reference.process([inputs.read()])[0]) for out in sink.images)
    assert sink.count == 10
    assert [(e.kind, e.message) for e in log.events] == [
        ("style-failed", "style 'ai-oil' cannot be used (style 'ai-oil' is for the 'diffusion' backend, "
                         "not 'classic'); keeping the previous style")]


# ---- out of memory at engine start ------------------------------------------------------------


def test_out_of_memory_at_start_under_a_real_memory_limit_retries_with_a_smaller_batch(tmp_path, figures):
    """In a child process capped with RLIMIT_AS: an engine that allocates its per-batch buffers at
    start (48 MB a frame, touched) gets a real MemoryError at batch 8 and 4, starts at batch 2,
    and the stream runs."""
    script = textwrap.dedent("""
        import json, resource
        import numpy as np
        from stylecam.core.runner import Runner, start_backend
        from stylecam.core.sinks import NullSink
        from stylecam.core.sources import PatternSource
        from stylecam.core.styles import Style
        from stylecam.core.stylize.base import Backend

        SLOT = 48 * 2**20

        class BufferEngine(Backend):
            name = "buffers"
            def __init__(self, batch_size):
                self.batch_size = batch_size
                self.buffers = np.ones((batch_size, SLOT), np.uint8)
            def set_style(self, style):
                pass
            def process(self, images):
                return [255 - img for img in images]
            def close(self):
                self.buffers = None

        def vm_size():
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize"))

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (vm_size() + 3 * SLOT + SLOT // 2, hard))
        events = []
        backend = start_backend(Style("buffers", "classic"), 8, on_event=events.append,
                                factory=lambda style, batch_size: BufferEngine(batch_size))
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))  # the cap is the device; the runner's threads are not
        sink = NullSink()
        summary = Runner(PatternSource((64, 48), realtime=False), backend, [sink], max_frames=20).run()
        print(json.dumps({"batch": backend.batch_size, "events": [e.message for e in events],
                          "out": sink.count, "passthrough": summary["passthrough"]}))
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["events"] == ["out of memory starting the classic stylizer with batch 8; retrying with batch 4",
                           "out of memory starting the classic stylizer with batch 4; retrying with batch 2"]
    assert r["batch"] == 2 and r["out"] == 20 and r["passthrough"] == 0
    figures.update(requested_batch=8, started_batch=2, attempts=3)


#: The simulated device: room for this many frames of a batch.
GPU = {"frames": 2}


class SmallGpuDiffusion(diffusion.DiffusionBackend):
    """The real diffusion backend on a pretend GPU with room for ``GPU["frames"]`` frames: once
    the bundle is loaded, a bigger batch fails where the engine allocates its batch-sized buffers,
    with the error and the wording torch gives for CUDA."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.batch_size > GPU["frames"]:
            self.close()
            raise torch.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {self.batch_size * 0.75:.2f} GiB. GPU 0 has a total "
                "capacity of 7.79 GiB of which 312.00 MiB is free.")


def test_diffusion_out_of_memory_at_start_retries_with_a_smaller_batch(tiny_bundle, offline, figures):
    style = STYLES["ai-oil"]
    loaded = B.load_bundle(tiny_bundle)
    log = EventLog()

    def factory(style, batch_size=None):
        backend = SmallGpuDiffusion(bundle=loaded, device="cpu", batch_size=batch_size)
        backend.set_style(style)
        return backend

    backend = start_backend(style, 8, factory=factory, on_event=log)
    assert backend.batch_size == 2
    assert [e.message for e in log.events] == [
        "out of memory starting the diffusion stylizer with batch 8; retrying with batch 4",
        "out of memory starting the diffusion stylizer with batch 4; retrying with batch 2"]
    # The smaller batch paints the same pictures a batch of one does.
    sink = Recorder()
    summary = Runner(Numbered(5, size=(64, 64)), backend, [sink]).run()
    assert summary["frames_out"] == 5 and summary["passthrough"] == 0
    single = factory(style, 1)
    inputs = Numbered(5, size=(64, 64))
    for out in sink.images:
        want = single.process([inputs.read()])[0]
        assert np.abs(out.astype(int) - want.astype(int)).max() <= 1
    figures.update(requested_batch=8, started_batch=2)


def test_cli_says_it_retried_with_a_smaller_batch(tiny_bundle, offline, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(diffusion, "DiffusionBackend", SmallGpuDiffusion)
    monkeypatch.setitem(GPU, "frames", 1)
    out = tmp_path / "frames"
    rc = cli.main(["run", "--backend", "diffusion", "--bundle", str(tiny_bundle), "--batch", "2",
                   "--size", "64x64", "--frames", "4", "--sink", f"file:{out}/"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert err.strip().splitlines() == [
        "stylecam: warning: out of memory starting the diffusion stylizer with batch 2; retrying with batch 1"]
    assert len(list(out.glob("*.png"))) == 4


def test_out_of_memory_even_at_batch_one_is_one_line(tiny_bundle, offline, monkeypatch, capsys):
    monkeypatch.setattr(diffusion, "DiffusionBackend", SmallGpuDiffusion)
    monkeypatch.setitem(GPU, "frames", 0)
    rc = cli.main(["run", "--backend", "diffusion", "--bundle", str(tiny_bundle), "--frames", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err[-1].startswith(
        "stylecam: out of memory starting the diffusion stylizer even with batch 1 (CUDA out of memory.")
    assert err[-1].endswith("use a smaller --size or bundle, close other programs using the GPU, or pick a "
                            "classic style")


@pytest.mark.parametrize("error, oom", [
    (MemoryError(), True), (torch.OutOfMemoryError("CUDA out of memory."), True),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory"), True),
    (BackendError("bundle x: loading y failed (OutOfMemoryError: CUDA out of memory)"), True),
    (RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"), True),
    (RuntimeError("CUDA error: device-side assert triggered"), False), (ValueError("bad"), False)])
def test_out_of_memory_is_told_from_other_errors(error, oom):
    assert is_out_of_memory(error) is oom


# ---- weights ------------------------------------------------------------------------------------


def _broken(src, tmp_path, how):
    dst = tmp_path / "broken"
    shutil.copytree(src, dst)
    weights = dst / "unet" / "diffusion_pytorch_model.safetensors"
    if how == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "missing":
        weights.unlink()
    elif how == "garbage":
        weights.write_bytes(b"\x00" * 4096)
    return dst, weights


@pytest.mark.parametrize("how, message", [
    ("truncated", "{weights} is damaged: it holds"),
    ("garbage", "{weights} is damaged or not a safetensors file"),
    ("missing", "has no weights (expected {weights})")])
def test_missing_or_corrupt_weights_are_one_line_naming_the_file(tiny_bundle, offline, tmp_path, capsys,
                                                                  how, message):
    folder, weights = _broken(tiny_bundle, tmp_path, how)
    rc = cli.main(["run", "--backend", "diffusion", "--bundle", str(folder), "--frames", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    assert err[0].startswith(f"stylecam: bundle {folder}") and message.format(weights=weights) in err[0]


def test_corrupt_weights_in_the_tray_fall_back_to_a_classic_style_and_keep_streaming(tiny_bundle, offline,
                                                                                    tmp_path):
    pytest.importorskip("PySide6")
    from PySide6.QtCore import Qt

    from stylecam.desktop.worker import StreamConfig, StreamWorker

    folder, weights = _broken(tiny_bundle, tmp_path, "truncated")
    styles, _ = load_styles()
    config = StreamConfig(source="pattern", style=styles["ai-oil"], size=(64, 48), fps=60.0, device="cpu",
                          bundle=str(folder))
    worker = StreamWorker(config, styles["oil"])
    notes, pairs = [], []
    direct = Qt.ConnectionType.DirectConnection  # no Qt event loop here: take signals in the worker thread
    worker.notify.connect(lambda *n: notes.append(n), direct)
    worker.frame_ready.connect(lambda: pairs.append(worker.take_frame()), direct)
    worker.start()
    try:
        assert wait_until(lambda: len([p for p in pairs if p is not None]) >= 3, 10)
    finally:
        worker.stop()
        assert worker.wait(2000)
    title, message, level = notes[0]
    assert title == "Style Oil painting (AI) is not available" and level == "warning"
    assert str(weights) in message and "Running the Oil" in message
    assert {p.style for p in pairs if p is not None} == {"oil"}


# ---- style files ---------------------------------------------------------------------------------


def test_corrupt_and_outdated_style_files_are_skipped_with_a_warning_and_the_stream_runs(tmp_path, monkeypatch,
                                                                                         capsys):
    config = tmp_path / "config"
    folder = config / "stylecam" / "styles"
    folder.mkdir(parents=True)
    (folder / "binary.toml").write_bytes(os.urandom(256) + b"\xff\xfe")
    (folder / "broken.toml").write_text('[[style]]\nname = "half\n')
    # An older layout: the effect at the top level instead of under params.
    (folder / "old.toml").write_text('[[style]]\nname = "mine"\neffect = "oil"\nradius = 4\n')
    (folder / "override.toml").write_text('[[style]]\nname = "oil"\nparams = { effect = "oil", radius = -3 }\n')
    (folder / "good.toml").write_text('[[style]]\nname = "mine-toon"\nparams = { effect = "toon" }\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    out = tmp_path / "frames"
    rc = cli.main(["run", "--style", "oil", "--source", "pattern", "--size", "64x48", "--frames", "3",
                   "--sink", f"file:{out}/"])
    captured = capsys.readouterr()
    assert rc == 0
    assert len(list(out.glob("*.png"))) == 3  # the built-in oil ran: the broken override was skipped
    warnings = [line for line in captured.err.splitlines() if line.startswith("stylecam: warning: ")]
    named = {name: [w for w in warnings if f"{folder / name}:" in w] for name in
             ("binary.toml", "broken.toml", "old.toml", "override.toml")}
    assert all(len(v) == 1 for v in named.values()), warnings
    assert "not valid" in named["binary.toml"][0] or "codec" in named["binary.toml"][0]
    assert "not valid TOML" in named["broken.toml"][0]
    assert "unknown keys 'effect', 'radius'" in named["old.toml"][0]
    assert "radius" in named["override.toml"][0]
    assert len(warnings) == 4
    styles, _ = load_styles()
    assert "mine-toon" in styles and styles["oil"].origin.startswith("built-in")
