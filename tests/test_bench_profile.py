"""The kernel profile harness (``stylecam bench --backend diffusion --profile``) and the A/B
plan, on the CPU: a real tiny bundle profiled with the profiler's CPU activities gives a
non-empty table whose components and whose kinds each sum to the measured total, with
Qwen3-VL's vision tower and language model apart; kernel names of a CUDA trace land in the
right kind; the A/B plan is a baseline and its variants over one base.
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


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


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
