"""Kernel profile of one steady-state batch per stack (``stylecam bench --backend diffusion
--profile``, or ``STYLECAM_BENCH_PROFILE=1``): where a batch's time goes, kernel by kernel.

Contract: :func:`profile_stack` takes a bundle (any device) and real frames, runs one engine
batch under ``torch.profiler`` after a warm-up, and returns JSON-ready rows; :func:`markdown`
turns rows into the table docs/benchmarks.md takes. It never changes the bundle (the engine it
opens is closed). No Qt; imports the engine, never imported by it.

What is profiled: the engine as the app runs it (``mode`` compile on CUDA unless told; eager on
the CPU), on one stream and **without CUDA graphs** (``cuda_graphs=False``: a replayed graph
shows as one launch, its kernels unnamed), with the conditioning encoder and the LLLite CNNs
refreshed in that batch (``refresh=1``), so every component shows up once; at refresh N the
encoder's share of a stream is 1/N of its row.

Two groupings of the same kernels, each summing to the batch's total:

* **component**, from the ``record_function`` ranges around each engine step
  (``stylecam.unet`` ...: :class:`.stylize.compile.EagerStep`) and, inside an eager encoder step,
  ranges that module hooks open around Qwen3-VL's vision tower and language model. A compiled
  step is one range to the profiler (Dynamo drops ranges inside it), so when the encoder step is
  compiled its vision/LM split comes from one extra *eager* call of it, reported apart
  (``group_by: "encoder, eager"``), outside the batch's total;
* **kind**, from each kernel's name (conv, GEMM, attention, norm, elementwise/fused, copy,
  other) or, when the name says nothing (a softmax inside SDPA's math path), from the nearest
  enclosing op that does.

On CUDA a group's time is the sum of its kernels' device time; on the CPU (tests) it is the
ops' own (self) CPU time. Where FLOPs are countable (``FlopCounterMode`` on the same engine's
eager steps, same inputs) a group also gets its achieved TFLOP/s and the share of the card's
dense bf16 peak (:data:`PEAK_TFLOPS`, the one table of those facts). Attention is counted by
:func:`attention_flops` (grouped-query attention included) and TAESD's fused blocks (a custom op,
opaque to torch's counter) by :func:`fused_conv_flops`; a component whose count fails keeps
its times and loses only its TFLOP columns (the total row's ``flops_errors`` says why).
"""

from __future__ import annotations

import contextlib
import re
import time

#: Dense peak TFLOP/s per card (the brief's working figures: near what an 8192³ bf16 matmul
#: reaches there — 788-804 on an H200, 769-798 on an H100 — not the datasheet's 989).
#: FP8 tensor cores double them. The one place these facts live: docs and rows read them here.
PEAK_TFLOPS = {"H200": {"bf16": 790.0, "fp8": 1580.0}, "H100": {"bf16": 760.0, "fp8": 1520.0}}

#: Engine step range -> component label.
COMPONENTS = {"stylecam.unet": "U-Net (+ folded LLLite)", "stylecam.encode": "TAESD encode",
              "stylecam.decode": "TAESD decode (+ resize out)", "stylecam.cond": "encoder",
              "stylecam.lllite": "LLLite conditioning", "stylecam.prep": "resize in",
              "stylecam.qwen_vision": "Qwen3-VL vision", "stylecam.qwen_lm": "Qwen3-VL LM"}
KINDS = ("conv", "GEMM", "attention", "norm", "elementwise/fused", "copy", "other")
#: The kind named by a kernel or op name; first match wins (attention before GEMM: flash
#: kernels mention "gemm" in some builds; norm before elementwise: fused Inductor reductions).
_KIND_PATTERNS = (
    ("attention", re.compile(r"flash|fmha|attention|sdpa|softmax_fused|_attn", re.I)),
    ("conv", re.compile(r"conv|fprop|dgrad|wgrad|implicit_gemm|winograd|mkldnn_convolution", re.I)),
    ("norm", re.compile(r"norm|welford", re.I)),
    ("GEMM", re.compile(r"gemm|matmul|\bmm\b|aten::mm|aten::addmm|aten::bmm|aten::baddbmm|aten::linear|"
                        r"_scaled_mm|cublas|cutlass|nvjet|sm\d+_xmma|triton_tem_fused_.*mm|_mm_", re.I)),
    ("copy", re.compile(r"copy|memcpy|memset|cat(_|array|\b)|transpose|nchwtonhwc|nhwctonchw|_to_copy|"
                        r"clone|contiguous|index|gather|scatter|pad", re.I)),
    ("elementwise/fused", re.compile(r"elementwise|vectorized|triton_|reduce|add|mul|silu|gelu|sigmoid|relu|"
                                     r"tanh|clamp|div|sub|exp|lerp|where|fill|arange|nan_to_num|round", re.I)),
)
#: Kinds an enclosing op passes down to kernels whose own names say nothing specific.
_COMPOSITE = ("attention", "conv", "norm", "GEMM")


def kernel_kind(name: str) -> str:
    """The kind of a CUDA kernel or an op, by its name (see :data:`KINDS`)."""
    if re.match(r"triton_(poi|per|red)_", name):
        # Inductor's fused pointwise/reduction kernels: named after every op they fused (a conv's
        # bias epilogue says "convolution"); a norm only when they compute one.
        return "norm" if "norm" in name else "elementwise/fused"
    for kind, pattern in _KIND_PATTERNS:
        if pattern.search(name):
            return kind
    return "other"


def card_peak(device_name: str | None) -> dict | None:
    """The :data:`PEAK_TFLOPS` entry of a card, by its name (None: not a card we know)."""
    for card, peaks in PEAK_TFLOPS.items():
        if device_name and card in device_name:
            return peaks
    return None


@contextlib.contextmanager
def qwen_ranges(qwen):
    """Profiler ranges around Qwen3-VL's vision tower and language model, opened by forward
    hooks (the fast forward calls the blocks, not the towers): from the first block in to the
    merger out, and from the first decoder layer in to the final norm out. Eager calls only."""
    if qwen is None:
        yield
        return
    from torch.autograd.profiler import record_function

    core = qwen.core
    open_ranges = {}

    def enter(name):
        def hook(module, args):
            if name not in open_ranges:
                open_ranges[name] = record_function(name)
                open_ranges[name].__enter__()
        return hook

    def leave(name):
        def hook(module, args, output):
            rf = open_ranges.pop(name, None)
            if rf is not None:
                rf.__exit__(None, None, None)
        return hook

    lm = core.language_model
    handles = [core.visual.blocks[0].register_forward_pre_hook(enter("stylecam.qwen_vision")),
               core.visual.merger.register_forward_hook(leave("stylecam.qwen_vision")),
               lm.layers[0].register_forward_pre_hook(enter("stylecam.qwen_lm")),
               lm.norm.register_forward_hook(leave("stylecam.qwen_lm"))]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for rf in open_ranges.values():
            rf.__exit__(None, None, None)


def _chain(event):
    while event is not None:
        yield event
        event = event.cpu_parent


def _attribute(events, *, cuda: bool, root: str) -> list[tuple[str, str, str, float]]:
    """(component, kind, name, microseconds) per kernel (CUDA) or per op's self time (CPU),
    for the events inside the range ``root``."""
    from torch.autograd import DeviceType

    out = []
    for e in events:
        if cuda:
            items = [(k.name, k.duration) for k in getattr(e, "kernels", [])]
        elif e.device_type == DeviceType.CPU:
            items = [(e.name, e.self_cpu_time_total)]
        else:
            items = []
        if not items:
            continue
        chain = list(_chain(e))
        names = [c.name for c in chain]
        if root not in names:
            continue
        inner = names[: names.index(root)]
        component = next((COMPONENTS[n] for n in inner if n in COMPONENTS), "other (glue)")
        enclosing = next((k for k in (kernel_kind(n) for n in inner if not n.startswith("stylecam."))
                          if k in _COMPOSITE), None)
        for name, us in items:
            kind = kernel_kind(name)
            if kind not in _COMPOSITE and enclosing is not None:
                kind = enclosing
            out.append((component, kind, name, float(us)))
    return out


def attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of one scaled-dot-product attention call, ``(batch, heads, seq, dim)`` shapes.

    Grouped-query attention counts right: key/value may have fewer heads than the query (each
    K/V head serves ``h_q / h_kv`` query heads; Qwen3-VL's language model, ``enable_gqa``), and
    the work is that of ``h_q`` heads — Q·Kᵀ and P·V, 2 FLOPs per multiply-add, as torch's own
    formula counts equal heads. (torch 2.11's formula asserted on it: the first H100 run lost
    the mllm-edit profile to "query/key/value shapes are incompatible".)"""
    b, h_q, s_q, d_qk = query_shape
    b_k, h_kv, s_k, d_k = key_shape
    h_v, s_v, d_v = value_shape[-3:]
    if b_k != b or d_k != d_qk or s_v != s_k or h_v != h_kv or h_kv < 1 or h_q % h_kv:
        raise ValueError(f"attention shapes do not fit: q {tuple(query_shape)}, k {tuple(key_shape)}, "
                         f"v {tuple(value_shape)}")
    return 2 * b * h_q * s_q * s_k * (d_qk + d_v)


def fused_conv_flops(x_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of one ``stylecam::conv3x3_add_relu`` call (TAESD's fused blocks): the convolution's
    2 per multiply-add, as torch counts a plain one; the bias, skip add and ReLU in its epilogue
    are not counted, as torch counts no pointwise op."""
    n, c_in, h, w = x_shape
    c_out, _, kh, kw = weight_shape
    return 2 * n * c_out * h * w * c_in * kh * kw


def _formulas() -> dict:
    # Ours where torch's counter has none. Every fused SDPA op whose first three arguments are
    # q, k, v (B, H, S, D): the CUDA kernels, and the CPU's flash op. And our fused TAESD
    # convolution: a custom op hides its convolution from the counter (the H100 profiles of
    # 2026-12-07 put TAESD at 2-9 % of peak with its FLOPs uncounted).
    import torch

    from .stylize import fused_vae  # registers the op

    aten = torch.ops.aten
    names = ("_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention",
             "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu")
    formulas = {getattr(aten, n): attention_flops for n in names if hasattr(aten, n)}
    formulas[fused_vae.conv3x3_add_relu._opoverload.overloadpacket] = fused_conv_flops
    return formulas


def count_flops(steps: dict) -> tuple[dict, dict, dict]:
    """FLOPs of each zero-argument step in ``steps`` (label -> callable), counted with
    ``FlopCounterMode`` and :func:`attention_flops`: ``(per_component, per_kind, errors)``.

    A step whose counting fails (an op torch cannot count, a formula that asserts) gets no
    entry in ``per_component`` and its message in ``errors``; the other steps keep theirs.
    ``per_kind`` sums the counted steps only, so it is left empty when any step failed (a
    kind's TFLOP/s from part of its work would read as slow kernels)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    formulas = _formulas()
    per_component, per_kind, errors = {}, {}, {}
    for label, fn in steps.items():
        try:
            with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=formulas) as counter:
                fn()
        except Exception as e:  # one component's count must not cost the others (or the profile)
            errors[label] = f"{type(e).__name__}: {e}"[:300]
            continue
        counts = counter.get_flop_counts()
        per_component[label] = counter.get_total_flops()
        if label == "encoder":
            for key, total in counts.items():
                for suffix, sub in ((".visual", "Qwen3-VL vision"), (".language_model", "Qwen3-VL LM")):
                    if key.endswith(suffix) and key.count(".") == 1:
                        per_component[sub] = sum(total.values())
        for op, n in counts.get("Global", {}).items():
            kind = kernel_kind(str(op).replace("aten.", "aten::"))
            per_kind[kind] = per_kind.get(kind, 0) + n
    return per_component, ({} if errors else per_kind), errors


def _flops(engine) -> tuple[dict, dict, dict]:
    """FLOPs of one batch per component and per kind (:func:`count_flops`), counted on the
    engine's eager steps with the inputs its buffers hold now (the batch just profiled)."""
    steps = {"U-Net (+ folded LLLite)": engine._unet_step, "TAESD encode": engine._encode_step,
             "TAESD decode (+ resize out)": engine._decode_step}
    if engine.cond_on_side:
        steps["encoder"] = engine._cond_step
    if engine.folded is not None:
        steps["LLLite conditioning"] = engine._lllite_step
    return count_flops(steps)


def _rows(items, total_us: float, flops: dict, peak: float | None, group_by: str) -> list[dict]:
    index = 0 if group_by != "kind" else 1
    ms = {}
    for item in items:
        ms[item[index]] = ms.get(item[index], 0.0) + item[3] / 1000.0
    rows = []
    for group, t in sorted(ms.items(), key=lambda kv: -kv[1]):
        row = {"group_by": group_by, "group": group, "ms": round(t, 4),
               "share": round(t * 1000.0 / total_us, 4) if total_us else None, "tflop": None, "tflops": None,
               "peak_share": None}
        if flops.get(group):
            row["tflop"] = round(flops[group] / 1e12, 5)
            row["tflops"] = round(flops[group] / (t / 1000.0) / 1e12, 2) if t > 0 else None
            row["peak_share"] = round(row["tflops"] / peak, 3) if peak and row["tflops"] else None
        rows.append(row)
    return rows


def profile_stack(bundle, frames, params, *, batch: int = 16, mode: str | None = None, warmup: int = 2,
                  settings: dict | None = None) -> list[dict]:
    """Profile one steady-state batch of ``batch`` frames (see the module docstring); rows:
    one ``group_by: "total"`` row, then one row per component, per kind and (compiled
    encoder) per eager-encoder part."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from .stylize.engine import StreamEngine
    from .stylize.engine_settings import EngineSettings

    cuda = bundle.device.type == "cuda"
    mode = mode or ("compile" if cuda else "eager")
    extra = dict(settings or {})
    engine_settings = EngineSettings(batch_size=batch, refresh=1, lllite_refresh=1, mode=mode, streams=False,
                                     cuda_graphs=False, **extra)
    frames = [frames[i % len(frames)] for i in range(batch)]
    engine = StreamEngine(bundle, engine_settings, style=params)
    try:
        for _ in range(warmup):
            engine.collect(engine.submit(frames))
        if cuda:
            torch.cuda.synchronize()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        encoder_compiled = engine.mode == "compile" and engine_settings.compile_encoder and engine.cond_on_side
        with profile(activities=activities) as prof:
            hooks = contextlib.nullcontext() if encoder_compiled else qwen_ranges(bundle.qwen)
            t0 = time.perf_counter()
            with hooks, record_function("stylecam.batch"):
                engine.collect(engine.submit(frames))
                if cuda:
                    torch.cuda.synchronize()
            wall_ms = (time.perf_counter() - t0) * 1000.0
            if encoder_compiled and bundle.qwen is not None:
                with qwen_ranges(bundle.qwen), record_function("stylecam.encoder_eager"), torch.no_grad():
                    engine._cond_step()
                    if cuda:
                        torch.cuda.synchronize()
        events = prof.events()
        items = _attribute(events, cuda=cuda, root="stylecam.batch")
        split = _attribute(events, cuda=cuda, root="stylecam.encoder_eager") if encoder_compiled else []
        flops_component, flops_kind, flops_errors = _flops(engine)
        # With the vision/LM ranges open, "encoder" holds only what lies outside both.
        flops_split = dict(flops_component)
        if "Qwen3-VL vision" in flops_split:
            flops_split["encoder"] = flops_split.get("encoder", 0) - flops_split["Qwen3-VL vision"] - \
                flops_split.get("Qwen3-VL LM", 0)
        flops_batch = flops_component if encoder_compiled else flops_split
        report = engine.report.as_dict()
    finally:
        engine.close()
    total_us = sum(i[3] for i in items)
    device_name = torch.cuda.get_device_name(bundle.device) if cuda else "cpu"
    peaks = card_peak(device_name)
    peak = peaks["bf16"] if peaks else None
    head = {"bench": "profile", "stack": bundle.manifest.stack, "batch": batch, "mode": mode,
            "device": device_name, "peak_bf16_tflops": peak, "settings": extra, **report}
    # The batch's TFLOP only when every component was counted.
    total_flops = None if flops_errors else sum(v for k, v in flops_component.items() if not k.startswith("Qwen3-VL "))
    if flops_errors:
        head = head | {"flops_errors": flops_errors}
    rows = [head | {"group_by": "total", "group": "batch", "ms": round(total_us / 1000.0, 4), "share": 1.0,
                    "wall_ms": round(wall_ms, 3), "kernels": len(items),
                    "tflop": round(total_flops / 1e12, 5) if total_flops else None,
                    "tflops": round(total_flops / (total_us / 1e6) / 1e12, 2) if total_flops and total_us else None}]
    rows += [head | r for r in _rows(items, total_us, flops_batch, peak, "component")]
    rows += [head | r for r in _rows(items, total_us, flops_kind, peak, "kind")]
    if split:
        rows += [head | r for r in _rows(split, sum(i[3] for i in split), flops_split, peak, "encoder, eager")]
    top = {}
    for _, kind, name, us in items:
        top[(kind, name)] = top.get((kind, name), 0.0) + us
    rows.append(head | {"group_by": "top kernels", "group": "top", "ms": None, "share": None,
                        "kernels_top": [{"kind": k, "name": n[:160], "ms": round(us / 1000.0, 4)}
                                        for (k, n), us in sorted(top.items(), key=lambda kv: -kv[1])[:15]]})
    return rows


def markdown(rows: list[dict]) -> str:
    """The profile rows of each stack as a markdown table (paste into docs/benchmarks.md)."""
    lines = []
    for stack in dict.fromkeys(r["stack"] for r in rows if r.get("bench") == "profile"):
        mine = [r for r in rows if r.get("bench") == "profile" and r["stack"] == stack]
        total = next((r for r in mine if r.get("group_by") == "total" and "error" not in r), None)
        if total is None:  # the profile failed: its error row says why
            error = next((r["error"] for r in mine if "error" in r), "no rows")
            lines += [f"**{stack}**: the profile failed: {error}", ""]
            continue
        mine = [r for r in mine if "error" not in r]
        peak = total.get("peak_bf16_tflops")
        lines += [f"**{stack}**, B={total['batch']}, {total['mode']}, {total['device']}: kernels {total['ms']:.2f} ms "
                  f"per batch (wall {total['wall_ms']:.2f} ms, {total['kernels']} kernels)"
                  + (f"; peak taken as {peak:g} TFLOP/s dense bf16" if peak else ""), "",
                  "| by | group | ms | share | TFLOP | TFLOP/s | of peak |", "|---|---|---|---|---|---|---|"]
        for r in mine:
            if r["group_by"] in ("total", "top kernels"):
                continue
            of_peak = "" if r["peak_share"] is None else f"{100 * r['peak_share']:.0f} %"
            lines.append(f"| {r['group_by']} | {r['group']} | {r['ms']:.3f} | {100 * (r['share'] or 0):.1f} % | "
                         f"{_num(r['tflop'])} | {_num(r['tflops'])} | {of_peak} |")
        for label, error in (total.get("flops_errors") or {}).items():
            lines += ["", f"FLOPs not counted for {label} ({error}): its TFLOP columns, the kinds' and the total's "
                          "are left empty."]
        top = next((r for r in mine if r["group_by"] == "top kernels"), None)
        if top:
            lines += ["", "Top kernels: " + "; ".join(f"{k['name'][:60]} ({k['kind']}) {k['ms']:.3f} ms"
                                                       for k in top["kernels_top"][:8])]
        lines.append("")
    return "\n".join(lines)


def _num(v) -> str:
    return "" if v is None else f"{v:g}"


__all__ = ["COMPONENTS", "KINDS", "PEAK_TFLOPS", "attention_flops", "card_peak", "count_flops", "kernel_kind",
           "markdown", "profile_stack", "qwen_ranges"]
