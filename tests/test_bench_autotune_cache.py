"""Carrying Inductor's tuning results between machines (core/bench_autotune_cache.py): what is
packed comes back byte for byte, a cache already there keeps its entries and gains the new ones,
and nothing is written outside the cache dir. Plain files, no torch."""

from __future__ import annotations

import json

import pytest

from stylecam.core.bench_autotune_cache import BEST_CONFIGS, main, pack, unpack


def _per_op(entries: dict) -> str:
    """An autotune cache file as Inductor writes it: the system, then op -> inputs -> timings."""
    return json.dumps({"system": {"device": {"name": "NVIDIA H100 80GB HBM3"}, "hash": "abc"},
                       "cache": entries}, indent=4)


def _inductor_dir(root, entries, kernels):
    (root / "cache").mkdir(parents=True)
    (root / "cache" / "abc").write_text(_per_op(entries))
    for rel, text in kernels.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "xy").mkdir(exist_ok=True)
    (root / "xy" / "kernel.py").write_text("# a generated kernel: compiled code is not packed")
    return root


MM = {"mm": {"((cuda, bf16, 128, 2048))": {"high": {"triton_mm_1": 0.01, "mm": 0.012}}}}
CONV = {"convolution": {"((cuda, bf16, 16, 3))": {"high": {"conv": 0.7}}}}


def test_a_packed_cache_unpacks_into_a_fresh_dir_as_it_was(tmp_path):
    kernels = {"ab/k1.best_config": '{"XBLOCK": 256, "num_warps": 4, "found_by_coordesc": true}',
               "cd/k2.best_config": '{"XBLOCK": 64}'}
    src = _inductor_dir(tmp_path / "machine1", {**MM, **CONV}, kernels)
    counts = pack(src, tmp_path / "carried")
    assert counts == {"per_op_files": 1, "best_configs": 2, "skipped_unparsable": 0}
    assert sorted(p.name for p in (tmp_path / "carried").iterdir()) == ["abc", BEST_CONFIGS]

    fresh = tmp_path / "machine2"
    assert unpack(tmp_path / "carried", fresh) == {"ops_added": 2, "best_configs_added": 2}
    assert json.loads((fresh / "cache" / "abc").read_text()) == json.loads((src / "cache" / "abc").read_text())
    for rel, text in kernels.items():
        assert (fresh / rel).read_text() == text
    assert not (fresh / "xy").exists()  # only tuning results travel


def test_unpacking_merges_op_by_op_and_keeps_what_is_there(tmp_path):
    carried = tmp_path / "carried"
    pack(_inductor_dir(tmp_path / "old", {**MM, **CONV}, {"ab/k1.best_config": '{"XBLOCK": 256}'}), carried)
    newer_mm = {"mm": {"((cuda, bf16, 128, 2048))": {"high": {"triton_mm_1": 0.009}},
                       "((cuda, bf16, 4096, 2048))": {"high": {"mm": 0.03}}}}
    here = _inductor_dir(tmp_path / "here", newer_mm, {"ab/k1.best_config": '{"XBLOCK": 128}'})
    # The conv (new here) and nothing else: the 128x2048 mm is already here, its timing stays.
    assert unpack(carried, here) == {"ops_added": 1, "best_configs_added": 0}
    merged = json.loads((here / "cache" / "abc").read_text())["cache"]
    assert merged["mm"]["((cuda, bf16, 128, 2048))"]["high"]["triton_mm_1"] == 0.009
    assert "((cuda, bf16, 4096, 2048))" in merged["mm"] and "convolution" in merged
    assert (here / "ab" / "k1.best_config").read_text() == '{"XBLOCK": 128}'
    # A second unpack adds nothing.
    assert unpack(carried, here) == {"ops_added": 0, "best_configs_added": 0}


def test_a_file_caught_half_written_is_skipped_and_the_last_good_copy_kept(tmp_path):
    """gpu_hw.sh's SNAPSHOT packs every 30 s while Inductor is still writing its files."""
    src = _inductor_dir(tmp_path / "machine", MM, {"ab/k1.best_config": '{"XBLOCK": 256}'})
    carried = tmp_path / "carried"
    assert pack(src, carried)["per_op_files"] == 1
    good = (carried / "abc").read_text()
    # Mid-write: the per-op file cut short, one kernel's result empty.
    (src / "cache" / "abc").write_text(_per_op({**MM, **CONV})[:40])
    (src / "cd").mkdir()
    (src / "cd" / "k2.best_config").write_text("")
    assert pack(src, carried) == {"per_op_files": 0, "best_configs": 1, "skipped_unparsable": 2}
    assert (carried / "abc").read_text() == good
    assert unpack(carried, tmp_path / "fresh") == {"ops_added": 1, "best_configs_added": 1}
    # Once written, the next pack takes it.
    (src / "cache" / "abc").write_text(_per_op({**MM, **CONV}))
    (src / "cd" / "k2.best_config").write_text('{"XBLOCK": 64}')
    assert pack(src, carried) == {"per_op_files": 1, "best_configs": 2, "skipped_unparsable": 0}


@pytest.mark.parametrize("path", ["../outside.best_config", "/etc/x.best_config", "ab/k1.py"])
def test_a_path_that_leaves_the_cache_dir_is_refused(tmp_path, path):
    carried = tmp_path / "carried"
    carried.mkdir()
    (carried / BEST_CONFIGS).write_text(json.dumps({"path": path, "content": "{}"}) + "\n")
    with pytest.raises(ValueError, match="inside the cache"):
        unpack(carried, tmp_path / "cache_dir")
    assert not (tmp_path / "outside.best_config").exists()


def test_a_file_that_is_not_an_autotune_cache_is_refused(tmp_path):
    carried = tmp_path / "carried"
    carried.mkdir()
    (carried / "README").write_text("not json")
    with pytest.raises(ValueError, match="not one of Inductor's autotune cache files"):
        unpack(carried, tmp_path / "cache_dir")


def test_missing_folders_pack_and_unpack_nothing(tmp_path):
    assert pack(tmp_path / "no-cache", tmp_path / "out") == {"per_op_files": 0, "best_configs": 0,
                                                            "skipped_unparsable": 0}
    assert unpack(tmp_path / "nothing", tmp_path / "cache_dir") == {"ops_added": 0, "best_configs_added": 0}


def test_the_committed_cache_is_inductors_and_unpacks(tmp_path, capsys):
    """The folder the device script seeds from (docs/data/autotune-cache/) stays loadable."""
    from pathlib import Path

    committed = Path(__file__).resolve().parents[1] / "docs" / "data" / "autotune-cache"
    assert main(["unpack", str(committed), str(tmp_path)]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["ops_added"] >= 72  # the whole first start (tenth to thirteenth sessions): 72 ops
    assert counts["best_configs_added"] >= 220
    assert main(["nonsense"]) == 2


def test_as_system_merges_another_cards_ops_into_this_cards_file_and_this_cards_win(tmp_path, capsys):
    carried = tmp_path / "carried"
    carried.mkdir()
    (carried / "h100").write_text(_per_op({**MM, **CONV}))
    own_mm = {"mm": {"((cuda, bf16, 128, 2048))": {"high": {"triton_mm_1": 0.02}}}}
    (carried / "h200").write_text(_per_op(own_mm))
    cache_dir = tmp_path / "cache_dir"
    assert main(["unpack", str(carried), str(cache_dir), "--as-system", "h200"]) == 0
    # The H200's own mm, then the H100's conv; its mm timing lost to the H200's.
    assert json.loads(capsys.readouterr().out) == {"ops_added": 2, "best_configs_added": 0}
    assert sorted(p.name for p in (cache_dir / "cache").iterdir()) == ["h200"]
    merged = json.loads((cache_dir / "cache" / "h200").read_text())["cache"]
    assert merged["mm"]["((cuda, bf16, 128, 2048))"]["high"]["triton_mm_1"] == 0.02
    assert merged["convolution"] == CONV["convolution"]
    assert main(["unpack", str(carried), str(cache_dir), "--as-system"]) == 2
