"""Run the stream engine on the tiny mllm-edit bundle on CUDA under several settings, each in its
own process with a deadline, to find which setting makes ``collect`` wait for ever.

    python3 scripts/engine_hang_bisect.py            # every variant, one line each
    python3 scripts/engine_hang_bisect.py one NAME   # one variant in this process (used by the above)

A variant that hangs prints every thread's stack (faulthandler) and is reported as HANG.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import json
import os
import subprocess
import sys
import time

VARIANTS = {
    # The settings of test_refresh_every_n_equals_reference_fed_cached_conditioning[2-2-3-False-cuda].
    "test": dict(batch_size=2, refresh=2, lllite_refresh=3, mode="graphs", profile=True),
    "no-profile": dict(batch_size=2, refresh=2, lllite_refresh=3, mode="graphs", profile=False),
    "eager-streams": dict(batch_size=2, refresh=2, lllite_refresh=3, mode="eager", profile=True),
    "graphs-one-stream": dict(batch_size=2, refresh=2, lllite_refresh=3, mode="graphs", streams=False),
    "refresh-1": dict(batch_size=2, refresh=1, lllite_refresh=1, mode="graphs", profile=True),
    "b3-refresh-1": dict(batch_size=3, refresh=1, lllite_refresh=1, mode="graphs", profile=True),
    "inflight-1": dict(batch_size=2, refresh=2, lllite_refresh=3, mode="graphs", profile=True),
    # As the test runs it: the real clip, the reference on CUDA first, TF32 off.
    "clip": dict(batch_size=2, refresh=2, lllite_refresh=3, mode="graphs", profile=True),
    "clip-ref": dict(batch_size=2, refresh=2, lllite_refresh=3, mode="graphs", profile=True),
    "clip-ref-tf32off": dict(batch_size=2, refresh=2, lllite_refresh=3, mode="graphs", profile=True),
    "rand-ref-tf32off": dict(batch_size=2, refresh=2, lllite_refresh=3, mode="graphs", profile=True),
    "clip-ref-tf32off-eager": dict(batch_size=2, refresh=2, lllite_refresh=3, mode="eager", profile=True),
}
FIRST = ["clip-ref-tf32off", "clip", "clip-ref", "rand-ref-tf32off", "clip-ref-tf32off-eager"]


def one(name: str) -> None:
    import numpy as np
    import torch

    from stylecam.core.stylize.bundle import build_tiny_bundle
    from stylecam.core.stylize.engine import EngineSettings, StreamEngine

    faulthandler.dump_traceback_later(int(os.environ.get("DIAG_TIMEOUT", "40")), exit=True)
    bundle = build_tiny_bundle("mllm-edit", lllite=True)
    bundle.manifest = dataclasses.replace(bundle.manifest, lllite_subset="down_blocks")
    bundle = bundle.to("cuda")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(7)]
    style = {"prompt": "an oil painting, thick brush strokes", "instruction": "turn it into an oil painting",
             "seed": 3}
    if name.startswith("clip"):
        sys.path.insert(0, "tests")
        from clips import read_clip

        from stylecam.core.frames import fit

        frames = [fit(f, (64, 64), "stretch") for f in read_clip("core/data/blackswan.mp4", 49)[::7]]
    if "tf32off" in name:
        from stylecam.core.stylize.compile import configure_runtime

        configure_runtime()
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_num_threads(1)
    if "-ref" in name:
        from stylecam.core.stylize import reference

        reference.stylize_frames(frames, style, bundle)
        torch.cuda.synchronize()
    engine = StreamEngine(bundle, EngineSettings(**VARIANTS[name]), style)
    t0 = time.perf_counter()
    try:
        if name == "inflight-1":
            out = [f for batch in engine.run_batches(frames, max_inflight=1) for f in batch]
        else:
            out = engine.process(frames)
    finally:
        engine.close()
    faulthandler.cancel_dump_traceback_later()
    print(json.dumps({"variant": name, "frames": len(out), "s": round(time.perf_counter() - t0, 2),
                      "mean": round(float(np.mean(out)), 2)}))


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "one":
        one(sys.argv[2])
        return 0
    names = FIRST + [v for v in VARIANTS if v not in FIRST]
    if os.environ.get("DIAG_VARIANTS"):
        names = os.environ["DIAG_VARIANTS"].split(",")
    for name in names:
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, __file__, "one", name], capture_output=True, text=True,
                           timeout=int(os.environ.get("DIAG_TIMEOUT", "40")) + 60)
        status = "OK" if p.returncode == 0 else ("HANG" if "Timeout" in p.stderr else f"rc={p.returncode}")
        print(f"{name:20s} {status:6s} {time.perf_counter() - t0:6.1f}s {p.stdout.strip()[-200:]}", flush=True)
        if status != "OK":
            print(p.stderr[-4000:], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
