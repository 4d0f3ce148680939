"""Each stack's facts in one place (core/stylize/stacks.py): every older table reads the records,
and a fourth stack added to that one table is a stack everywhere — styles, manifests, the tiny
builder, loading, ``stylecam models``, the backend (equal to the reference stylizer)."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import numpy as np
import pytest

from stylecam.core import cli, doctor
from stylecam.core.styles import make_style
from stylecam.core.stylize import bundle as B
from stylecam.core.stylize import params, stacks
from stylecam.core.stylize.base import BackendError
from stylecam.core.stylize.diffusion import DiffusionBackend
from stylecam.core.stylize.reference import stylize_frames


def test_the_older_tables_are_views_of_the_records():
    assert B.STACKS == tuple(stacks.STACKS) == ("sd-turbo", "pix2pix", "mllm-edit")
    for name, record in stacks.STACKS.items():
        assert B.REQUIRED[name] == record.components
        assert dict(B.STACK_DEFAULTS[name]) == dict(record.defaults)
        assert B.default_manifest(name).concat == record.concat_modes[0] == record.defaults["concat"]
    assert set(B.HUB_BUNDLES) == {"sd-turbo", "pix2pix"} == set(stacks.hub_stacks())
    from stylecam.core.stylize.diffusion import DEFAULT_STACK

    assert DEFAULT_STACK == stacks.DEFAULT_STACK and stacks.STACKS[DEFAULT_STACK].hub


def test_the_doctor_knows_every_repository_a_stack_pulls():
    # The table that drifted (it had no pix2pix) is now made from the records.
    repos = {repo for record in stacks.STACKS.values() for repo in record.repos}
    assert set(doctor.KNOWN_BUNDLES) == repos
    assert "timbrooks/instruct-pix2pix" in repos
    assert doctor.KNOWN_BUNDLES["madebyollin/taesd"] == "VAE of sd-turbo, pix2pix"


def test_records_cannot_be_changed_after_import():
    record = stacks.STACKS["sd-turbo"]
    with pytest.raises(TypeError):
        record.defaults["steps"] = 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.flow = True
    with pytest.raises(TypeError):
        stacks.STACKS["x"] = record


@pytest.fixture
def fourth_stack(monkeypatch):
    """A new stack added to the one table: sd-turbo's models, its own defaults, no public weights."""
    base = stacks.STACKS["sd-turbo"]
    record = dataclasses.replace(base, name="sd-turbo-soft", summary="img2img, gentler and in two steps",
                                 licence="your own weights", hub={}, no_hub="bring your own bundle",
                                 defaults={**base.defaults, "strength": 0.8, "steps": 2})
    monkeypatch.setattr(stacks, "STACKS", MappingProxyType({**stacks.STACKS, record.name: record}))
    return record


def test_a_fourth_stack_is_a_stack_everywhere(fourth_stack, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = fourth_stack.name
    # A style may ask for it.
    style = make_style({"name": "soft", "backend": "diffusion", "params": {"prompt": "an oil painting",
                                                                          "stack": name}})
    assert params.validate({"prompt": "x", "stack": name})["stack"] == name
    # Its manifest, tiny bundle, saved folder and loaded bundle.
    folder = B.write_tiny_bundle(name, tmp_path / name)
    loaded = B.load_bundle(folder)
    assert loaded.stack == name and (loaded.manifest.strength, loaded.manifest.steps) == (0.8, 2)
    # `stylecam models` lists it and refuses to pull it in its own words.
    assert cli.main(["models", "list"]) == 0
    assert f"{name:<10} img2img, gentler and in two steps" in capsys.readouterr().out
    assert cli.main(["models", "pull", name]) == 2
    assert capsys.readouterr().err.strip() == "stylecam: error: bring your own bundle"
    # The backend runs it, equal to the reference stylizer (which reads the same record).
    frames = [np.random.default_rng(i).integers(0, 256, (48, 64, 3), np.uint8) for i in range(2)]
    backend = DiffusionBackend(bundle=folder, device="cpu", batch_size=2)
    try:
        backend.set_style(style)
        got = backend.process(frames)
    finally:
        backend.close()
    want = stylize_frames(frames, style, loaded)
    for g, w in zip(got, want):
        diff = np.abs(g.astype(int) - w.astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.01
    # ... and a bundle of another stack refuses a style written for it.
    other = B.write_tiny_bundle("sd-turbo", tmp_path / "plain")
    backend = DiffusionBackend(bundle=other, device="cpu")
    try:
        with pytest.raises(BackendError, match=f"written for the {name} stack"):
            backend.set_style(style)
    finally:
        backend.close()
