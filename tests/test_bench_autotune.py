"""Reading max-autotune's choices back from a bench log (``core/bench_autotune.py``).

The log below keeps the shape of what torch 2.11's Inductor printed on an H100 (2026-12-07,
mllm-edit at B=16): a stats JSON line, the table of the fastest choices, the search time. Three
ops: one a Triton template won, one the library (cuDNN) won, one whose library time fell out
of the table. Around them, the noise a real stderr holds.
"""

from __future__ import annotations

from stylecam.core.bench_autotune import parse_autotune_log, summarize

LOG = """\
W1207 16:25:01.000000 563 torch/_dynamo/convert_frame.py:1] some warning
Autotune Choices Stats:
{"num_choices": 10, "num_triton_choices": 9, "best_kernel": "triton_convolution2d_8", "best_time": 0.5579}
AUTOTUNE convolution(16x3x512x512, 64x3x3x3)
strides: [786432, 1, 1536, 3], [27, 1, 9, 3]
dtypes: torch.bfloat16, torch.bfloat16
  triton_convolution2d_8 0.5579 ms 100.0% ALLOW_TF32=False, BLOCK_K=16, BLOCK_M=128, num_stages=4, num_warps=4
  triton_convolution2d_5 0.5628 ms 99.1% ALLOW_TF32=False, BLOCK_K=16, BLOCK_M=256, num_stages=2, num_warps=8
  convolution 0.7088 ms 78.7%
SingleProcess AUTOTUNE benchmarking takes 0.4701 seconds and 0.0079 seconds precompiling for 10 choices
E1207 16:26:27.052000 563 torch/_inductor/select_algorithm.py:3924] [1/0] No valid triton configs. Ignoring this choice.
Autotune Choices Stats:
{"num_choices": 22, "num_triton_choices": 20, "best_kernel": "bias_addmm", "best_time": 0.1868}
AUTOTUNE addmm(131072x320, 131072x1280, 1280x320)
strides: [0, 1], [1280, 1], [1, 1280]
dtypes: torch.bfloat16, torch.bfloat16, torch.bfloat16
  bias_addmm 0.1868 ms 100.0%
  triton_mm_6609 0.2467 ms 75.7% ACC_TYPE='tl.float32', BLOCK_K=64, num_stages=3, num_warps=4
  addmm 0.2506 ms 74.6%
SingleProcess AUTOTUNE benchmarking takes 41.3910 seconds and 0.0003 seconds precompiling for 22 choices
Autotune Choices Stats:
{"num_choices": 21, "num_triton_choices": 20, "best_kernel": "triton_mm_88", "best_time": 0.0105}
AUTOTUNE addmm(256x3072, 256x1024, 1024x3072)
  triton_mm_88 0.0105 ms 100.0% ACC_TYPE='tl.float32', num_stages=3, num_warps=4
  triton_mm_90 0.0110 ms 95.5% ACC_TYPE='tl.float32', num_stages=4, num_warps=8
SingleProcess AUTOTUNE benchmarking takes 24.2381 seconds and 0.0002 seconds precompiling for 21 choices
"""


def test_each_tuned_op_is_a_row_with_its_winner_and_what_it_saved():
    rows = parse_autotune_log(LOG)
    assert [r["op"] for r in rows] == ["convolution", "addmm", "addmm"]
    conv, ff, qkv = rows
    assert conv["shapes"] == "16x3x512x512, 64x3x3x3" and conv["choices"] == 10
    assert conv["best"] == "triton_convolution2d_8" and conv["triton_won"]
    assert conv["library_ms"] == 0.7088 and conv["saved_ms"] == round(0.7088 - 0.5579, 4)
    assert conv["search_s"] == round(0.4701 + 0.0079, 2)
    # cuBLAS won: nothing saved, and of two library choices the faster one counts.
    assert ff["best"] == "bias_addmm" and not ff["triton_won"] and ff["library_ms"] == 0.1868
    assert ff["saved_ms"] == 0 and ff["search_s"] == 41.39
    # The library's time is not in the table: the saving is unknown, not zero.
    assert qkv["triton_won"] and qkv["library_ms"] is None and qkv["saved_ms"] is None


def test_summary_counts_only_the_ops_whose_library_time_is_known():
    lines = summarize(parse_autotune_log(LOG))
    assert lines[0].startswith("max-autotune: 3 ops tuned (addmm, convolution), 66 s of searching; Triton won 2")
    # (0.7088 + 0.1868) -> (0.5579 + 0.1868): 16.8 % less
    assert "0.896 -> 0.745 ms" in lines[1] and "(16.8 % less)" in lines[1]
    assert "convolution(16x3x512x512, 64x3x3x3): 0.7088 -> 0.5579 ms" in lines[2]
    assert summarize(parse_autotune_log("nothing tuned here\n")) == ["max-autotune: no tuned op in the log"]
