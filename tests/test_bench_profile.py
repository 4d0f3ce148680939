"""The kernel profile harness (``stylecam bench --backend diffusion --profile``) and the A/B
plan, on the CPU: a real tiny bundle profiled with the profiler's CPU activities gives a
non-empty table whose components and whose kinds each sum to the measured total, with
Qwen3-VL's vision tower and language model apart; kernel names of a CUDA trace land in the
right kind; the A/B plan is a baseline and its variants over one base, and each A/B engine in
one process compiles for its own settings (memory format, attention backend).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest
import torch

from stylecam.core import bench
from stylecam.core.bench import sample_frames
from stylecam.core.bench_diffusion import plan
from stylecam.core.bench_profile import PEAK_TFLOPS, card_peak, kernel_kind, markdown, profile_stack
from stylecam.core.stylize.bundle import build_tiny_bundle

STYLE = {"prompt": "an oil painting", "instruction": "turn it into an oil painting", "seed": 3}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_profile_of_a_tiny_batch_sums_to_its_total():
    bundle = build_tiny_bundle("mllm-edit", lllite=True)
    bundle.manifest = dataclasses.replace(bundle.manifest, lllite_subset="down_blocks")
    rows = profile_stack(bundle, sample_frames(bundle.manifest.size, 2), STYLE, batch=2)
    json.dumps(rows)  # JSON rows, as the bench writes them
    total = next(r for r in rows if r["group_by"] == "total")
    assert total["ms"] > 0 and total["kernels"] > 100 and total["device"] == "cpu"
    # The ops' own times cover the batch: the profiled range's wall time, give or take overhead.
    assert 0.5 * total["wall_ms"] <= total["ms"] <= 1.05 * total["wall_ms"], total
    for group_by in ("component", "kind"):
        groups = [r for r in rows if r["group_by"] == group_by]
        assert len(groups) >= 4
        assert sum(r["ms"] for r in groups) == pytest.approx(total["ms"], rel=1e-3)
        assert sum(r["share"] for r in groups) == pytest.approx(1.0, abs=2e-3)
    components = {r["group"]: r for r in rows if r["group_by"] == "component"}
    for name in ("U-Net (+ folded LLLite)", "TAESD encode", "TAESD decode (+ resize out)", "Qwen3-VL vision",
                 "Qwen3-VL LM", "LLLite conditioning"):
        assert components[name]["ms"] > 0, name
    assert components["U-Net (+ folded LLLite)"]["tflop"] > 0 and components["Qwen3-VL LM"]["tflops"] > 0
    kinds = {r["group"]: r for r in rows if r["group_by"] == "kind"}
    assert kinds["conv"]["ms"] > 0 and kinds["GEMM"]["tflop"] > 0 and kinds["attention"]["ms"] > 0
    table = markdown(rows)
    assert "| component | Qwen3-VL LM |" in table and "| kind | conv |" in table and "**mllm-edit**" in table
    # The engine it opened is closed: the U-Net is plain again (LLLite unfolded).
    assert type(bundle.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q) is torch.nn.Linear


@pytest.mark.parametrize("name, kind", [
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x64x128", "attention"),
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128>>", "attention"),
    ("fmha_cutlassF_bf16_aligned_64x128_rf_sm80", "attention"),
    ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc", "conv"),
    ("nvjet_tst_256x128_64x4_1x2_h_bz_coopB_TNT", "GEMM"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", "GEMM"),
    ("triton_tem_fused_addmm_3", "GEMM"),
    ("triton_poi_fused_convolution_relu_12", "elementwise/fused"),
    ("triton_red_fused_native_group_norm_silu_7", "norm"),
    ("void at::native::(anonymous namespace)::CatArrayBatchedCopy<float, 4>", "copy"),
    ("Memcpy HtoD (Pinned -> Device)", "copy"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>", "elementwise/fused"),
    ("aten::native_group_norm", "norm"),
    ("aten::mkldnn_convolution", "conv"),
    ("aten::addmm", "GEMM"),
])
def test_kernel_names_land_in_their_kind(name, kind):
    assert kernel_kind(name) == kind


def test_peaks_are_one_table_of_facts():
    assert card_peak("NVIDIA H200")["bf16"] == PEAK_TFLOPS["H200"]["bf16"] == 790.0
    assert card_peak("NVIDIA H100 80GB HBM3")["bf16"] == 760.0
    assert card_peak("cpu") is None


def test_ab_plan_is_a_baseline_and_its_variants(monkeypatch):
    monkeypatch.setenv("STYLECAM_BENCH_MODES", "stream")
    monkeypatch.setenv("STYLECAM_BENCH_BATCHES", "16")
    monkeypatch.setenv("STYLECAM_BENCH_REFRESH", "4")
    monkeypatch.setenv("STYLECAM_BENCH_EXTRA", "0")
    monkeypatch.setenv("STYLECAM_BENCH_DEVICES", "")
    monkeypatch.setenv("STYLECAM_BENCH_AB_BASE", '{"mode": "compile"}')
    monkeypatch.setenv("STYLECAM_BENCH_AB", '[{"fp8": true}, {"sdpa_backend": "cudnn"}, {"channels_last_vae": false}]')
    rows = [c for c in plan("mllm-edit") if "ab" in c]
    assert [c["ab"] for c in rows] == ["baseline", "fp8=True", "sdpa_backend=cudnn", "channels_last_vae=False"]
    assert [c["extra"] for c in rows] == [{"mode": "compile"}, {"mode": "compile", "fp8": True},
                                          {"mode": "compile", "sdpa_backend": "cudnn"},
                                          {"mode": "compile", "channels_last_vae": False}]
    assert all(c["batch"] == 16 and c["refresh"] == 4 for c in rows)


def test_bench_takes_the_profile_flag():
    p = argparse.ArgumentParser()
    bench.configure_parser(p)
    assert p.parse_args(["--backend", "diffusion", "--profile"]).profile is True
    assert p.parse_args([]).profile is False


def test_attention_flops_count_grouped_query_heads_as_query_heads():
    from torch.utils.flop_counter import sdpa_flop_count

    from stylecam.core.bench_profile import attention_flops

    q, kv = (2, 8, 40, 16), (2, 2, 24, 16)
    # The reference: torch's formula on K/V expanded to the query's heads (what enable_gqa does).
    expanded = (2, 8, 24, 16)
    assert attention_flops(q, kv, kv) == sdpa_flop_count(q, expanded, expanded) == 2 * 2 * 8 * 40 * 24 * 32
    assert attention_flops(q, expanded, expanded) == sdpa_flop_count(q, expanded, expanded)
    with pytest.raises(ValueError, match="attention shapes"):
        attention_flops(q, (2, 3, 24, 16), (2, 3, 24, 16))  # 8 query heads over 3 K/V heads


def test_a_component_whose_flops_cannot_be_counted_keeps_the_others():
    from torch.utils.flop_counter import sdpa_flop_count

    from stylecam.core.bench_profile import count_flops

    a, b = torch.randn(8, 16), torch.randn(16, 4)

    def fails():  # torch's formula asserting mid-step, as torch 2.11's did on Qwen3-VL's GQA
        torch.mm(a, b)
        sdpa_flop_count((1, 4, 8, 16), (2, 4, 8, 16), (2, 4, 8, 16))

    per_component, per_kind, errors = count_flops({"good": lambda: torch.mm(a, b), "bad": fails})
    assert per_component == {"good": 2 * 8 * 16 * 4}
    assert list(errors) == ["bad"] and "shapes are incompatible" in errors["bad"]
    assert per_kind == {}  # a kind's total from part of the work would mislead
    per_component, per_kind, errors = count_flops({"good": lambda: torch.mm(a, b)})
    assert per_kind == {"GEMM": 2 * 8 * 16 * 4} and errors == {}


def test_grouped_query_attention_of_the_tiny_qwen_is_counted():
    bundle = build_tiny_bundle("mllm-edit")
    text = bundle.qwen.core.language_model.config
    assert text.num_key_value_heads < text.num_attention_heads  # the case the H100 run failed on
    rows = profile_stack(bundle, sample_frames(bundle.manifest.size, 2), STYLE, batch=2)
    total = next(r for r in rows if r["group_by"] == "total")
    assert "flops_errors" not in total and total["tflop"] > 0
    kinds = {r["group"]: r for r in rows if r["group_by"] == "kind"}
    assert kinds["attention"]["tflop"] > 0
    components = {r["group"]: r for r in rows if r["group_by"] == "component"}
    assert components["Qwen3-VL LM"]["tflop"] > 0


def test_markdown_names_a_failed_profile_and_keeps_the_others():
    ok = {"bench": "profile", "stack": "sd-turbo", "batch": 8, "mode": "compile", "device": "cpu",
          "peak_bf16_tflops": None, "group_by": "total", "group": "batch", "ms": 2.0, "wall_ms": 2.5, "kernels": 10,
          "flops_errors": {"encoder": "AssertionError: shapes"}}
    part = dict(ok, group_by="component", group="TAESD encode", ms=2.0, share=1.0, tflop=None, tflops=None,
                peak_share=None)
    failed = {"bench": "profile", "stack": "mllm-edit", "group_by": "total", "error": "AssertionError: boom"}
    table = markdown([failed, ok, part])
    assert "**mllm-edit**: the profile failed: AssertionError: boom" in table
    assert "**sd-turbo**, B=8" in table and "| component | TAESD encode | 2.000 |" in table
    assert "FLOPs not counted for encoder (AssertionError: shapes)" in table


def test_a_step_compiled_for_channels_last_is_not_reused_after_close():
    """The H100 A/B run: TAESD compiled with channels-last weights (baseline), the engine closed
    (weights back to contiguous), the next engine's step ran the stale graph and failed
    Inductor's stride assertion. Real Inductor on the CPU, the engine's conversions, and torch
    2.11's guard setting (recursive dict tags) on."""
    from stylecam.core.stylize.compile import compile_step, to_memory_format
    from stylecam.core.stylize.denoiser import encode_frames

    torch._dynamo.reset()
    bundle = build_tiny_bundle("sd-turbo")
    vae = bundle.vae
    frames = torch.from_numpy(__import__("numpy").stack(sample_frames(bundle.manifest.size, 2)))

    class Engine:  # an engine's compiled step: one code object shared by every engine
        def step(self):
            return encode_frames(bundle.vae, frames)

    before = {n: p for n, p in vae.named_parameters()}
    outputs = []
    with torch._dynamo.config.patch(use_recursive_dict_tags_for_guards=True):
        for fmt in (torch.channels_last, torch.contiguous_format):
            to_memory_format(vae, fmt)  # the engine's channels_last_vae (on), then close (off)
            step = compile_step(Engine().step)
            with torch.no_grad():
                outputs += [(step(), step(), encode_frames(vae, frames))]
            if fmt is torch.channels_last:
                weight = vae.encoder.layers[0].weight
                assert weight.is_contiguous(memory_format=torch.channels_last) and weight.stride()[1] == 1
    for compiled, again, eager in outputs:
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(again, eager, rtol=1e-4, atol=1e-4)
    after = dict(vae.named_parameters())
    # New objects (the modules' parameter dicts changed: what the guards look at), same values.
    conv = [n for n, p in after.items() if p.dim() == 4]
    assert conv and all(after[n] is not before[n] for n in conv)
    assert all(torch.equal(after[n], before[n]) for n in after)
    assert all(after[n] is before[n] for n in after if after[n].dim() != 4)
    shared = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(3, 4, 3))
    shared[1].weight = shared[0].weight
    to_memory_format(shared, torch.channels_last)
    assert shared[1].weight is shared[0].weight and shared[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_an_engine_with_another_attention_backend_traces_its_steps_again():
    """Dynamo does not guard on the SDPA backend (picked when it traces): the A/B row
    ``sdpa_backend=cudnn`` reused the baseline's compiled kernels. Real engines, Dynamo's tracing
    as CI runs it (``compile_backend="eager"``)."""
    from torch._dynamo.utils import counters

    from stylecam.core.stylize.engine import EngineSettings, StreamEngine

    torch._dynamo.reset()
    bundle = build_tiny_bundle("sd-turbo")
    frames = sample_frames(bundle.manifest.size, 2)

    def graphs_traced(backend: str) -> int:
        before = counters["stats"]["unique_graphs"]
        engine = StreamEngine(bundle, EngineSettings(batch_size=2, mode="compile", compile_backend="eager",
                                                     sdpa_backend=backend), style=STYLE)
        try:
            engine.collect(engine.submit(frames))
        finally:
            engine.close()
        return counters["stats"]["unique_graphs"] - before

    assert graphs_traced("auto") >= 3  # encode, U-Net, decode
    assert graphs_traced("auto") == 0  # same settings: Dynamo's cache serves them
    assert graphs_traced("math") >= 3  # another backend: traced under it
    assert graphs_traced("math") == 0


def test_compile_only_plan_is_the_rows_the_peer_is_compared_with(monkeypatch):
    for k, v in {"STYLECAM_BENCH_MODES": "stream,latency", "STYLECAM_BENCH_BATCHES": "8",
                 "STYLECAM_BENCH_LATENCY_BATCHES": "1", "STYLECAM_BENCH_REFRESH": "1", "STYLECAM_BENCH_EXTRA": "0",
                 "STYLECAM_BENCH_DEVICES": "", "STYLECAM_BENCH_COMPILE": "only"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("STYLECAM_BENCH_AB_BASE", raising=False)
    monkeypatch.delenv("STYLECAM_BENCH_COMPILE_MODE", raising=False)
    compiled = {"mode": "compile", "compile_mode": "default"}
    assert [(c["mode"], c["batch"], c.get("extra")) for c in plan("sd-turbo")] == [
        ("stream", 8, compiled), ("latency", 1, compiled)]
    monkeypatch.setenv("STYLECAM_BENCH_COMPILE", "1")  # the CUDA-graph rows too, first
    assert [(c["mode"], c["batch"], c.get("extra")) for c in plan("sd-turbo")] == [
        ("stream", 8, None), ("latency", 1, None), ("stream", 8, compiled), ("latency", 1, compiled)]


def test_latency_twins_follow_the_compiled_latency_row(monkeypatch):
    # STYLECAM_BENCH_PACE_AB and STYLECAM_BENCH_LATENCY_AB: the compiled latency row again with
    # each variant (pacing off, a deferred refresh), same process, right after it.
    for k, v in {"STYLECAM_BENCH_MODES": "stream,latency", "STYLECAM_BENCH_BATCHES": "16",
                 "STYLECAM_BENCH_LATENCY_BATCHES": "1", "STYLECAM_BENCH_REFRESH": "4", "STYLECAM_BENCH_EXTRA": "0",
                 "STYLECAM_BENCH_DEVICES": "", "STYLECAM_BENCH_COMPILE": "only", "STYLECAM_BENCH_PACE_AB": "1",
                 "STYLECAM_BENCH_LATENCY_AB": '[{"deferred_refresh": true}]'}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("STYLECAM_BENCH_AB_BASE", raising=False)
    monkeypatch.delenv("STYLECAM_BENCH_COMPILE_MODE", raising=False)
    compiled = {"mode": "compile", "compile_mode": "default"}
    assert [(c["mode"], c["batch"], c.get("extra")) for c in plan("mllm-edit")] == [
        ("stream", 16, compiled), ("latency", 1, compiled), ("latency", 1, {**compiled, "pace": "off"}),
        ("latency", 1, {**compiled, "deferred_refresh": True})]
    # Latency rows alone (no stream rows asked for) still get the compiled row and its twins.
    monkeypatch.setenv("STYLECAM_BENCH_MODES", "latency")
    assert [(c["mode"], c.get("extra")) for c in plan("mllm-edit")] == [
        ("latency", compiled), ("latency", {**compiled, "pace": "off"}),
        ("latency", {**compiled, "deferred_refresh": True})]


def test_a_bench_with_no_rows_says_so(capsys):
    # (An empty plan, e.g. latency rows asked for without compile, used to crash the table.)
    from stylecam.core.bench import print_table

    print_table([])
    assert capsys.readouterr().out.strip() == "(no rows)"


def test_headline_rows_run_the_apps_own_refresh_unless_one_is_asked_for(monkeypatch):
    # Without STYLECAM_BENCH_REFRESH the headline rows use the engine's default for their B
    # (every 64 frames: 4 batches of 16, 64 of 1), which is what `stylecam run` and the tray get;
    # a latency twin may still ask for the old every-4-batches row.
    for k, v in {"STYLECAM_BENCH_MODES": "stream,latency", "STYLECAM_BENCH_BATCHES": "16",
                 "STYLECAM_BENCH_LATENCY_BATCHES": "1", "STYLECAM_BENCH_EXTRA": "0",
                 "STYLECAM_BENCH_DEVICES": "", "STYLECAM_BENCH_COMPILE": "only", "STYLECAM_BENCH_PACE_AB": "0",
                 "STYLECAM_BENCH_LATENCY_AB": '[{"refresh": 4}]'}.items():
        monkeypatch.setenv(k, v)
    for k in ("STYLECAM_BENCH_REFRESH", "STYLECAM_BENCH_AB_BASE", "STYLECAM_BENCH_COMPILE_MODE"):
        monkeypatch.delenv(k, raising=False)
    compiled = {"mode": "compile", "compile_mode": "default"}
    assert [(c["mode"], c["batch"], c["refresh"], c.get("extra")) for c in plan("mllm-edit")] == [
        ("stream", 16, 4, compiled), ("latency", 1, 64, compiled), ("latency", 1, 4, compiled)]
    assert [c["refresh"] for c in plan("sd-turbo")][:2] == [1, 1]  # no vision: nothing to refresh
    # An A/B variant's batch takes its own default N.
    monkeypatch.setenv("STYLECAM_BENCH_MODES", "stream")
    monkeypatch.setenv("STYLECAM_BENCH_AB_BASE", '{"mode": "compile"}')
    monkeypatch.setenv("STYLECAM_BENCH_AB", '[{"batch": 8}, {"refresh": 1}]')
    assert [(c["ab"], c["batch"], c["refresh"]) for c in plan("mllm-edit") if "ab" in c] == [
        ("baseline", 16, 4), ("batch=8", 8, 8), ("refresh=1", 16, 1)]
    monkeypatch.setenv("STYLECAM_BENCH_REFRESH", "1")  # asked for: every headline row at N=1
    assert {c["refresh"] for c in plan("mllm-edit") if "ab" not in c or c["ab"] == "baseline"} == {1}
