"""The field's CLIP checkpoints by name (registry/backbone/*.yaml, rdbench/backbones/hub.py):
fetched through huggingface_hub into its cache, used offline from there, and one line for each
way it can go wrong. No network: the files are state dicts of randomly initialised models of the
right architecture, placed where the hub cache holds a downloaded file."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
import torch
from hub_cache import place_in_hub_cache as place_file

from rdbench.errors import DataError
from rdbench.openclip import create_model
from rdbench.resolution.spec import resolve

def place_in_hub_cache(cache: Path, repo: str, filename: str, architecture: str) -> tuple[Path, dict]:
    """A random ``architecture`` state dict where hf_hub_download finds ``repo``/``filename``."""
    state = create_model(architecture, pretrained=None).state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return place_file(cache, repo, filename, buffer.getvalue()), state


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    from rdbench.testing import tiny_clip_config

    tiny_clip_config()  # the rdbench-test architecture stands in for a real one where size does not matter
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def build(key: str, **args):
    return resolve({"name": key, **args}, "backbone").build()


def test_a_hub_checkpoint_loads_offline_from_the_cache_and_the_record_names_it(offline_hub):
    path, state = place_in_hub_cache(offline_hub, "someone/rs-clip", "ckpt/model.pt", "rdbench-test")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    backbone = build("backbone/open-clip", architecture="rdbench-test", hub_repo="someone/rs-clip",
                     hub_file="ckpt/model.pt", sha256=digest)
    model = backbone.build_model()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    provenance = backbone.provenance()
    assert provenance["hub"] == "someone/rs-clip/ckpt/model.pt" and provenance["checksum"] == digest


def test_offline_and_not_cached_is_one_line_naming_the_file_and_the_setting(offline_hub):
    backbone = build("backbone/open-clip", architecture="rdbench-test", hub_repo="someone/absent", hub_file="w.pt")
    with pytest.raises(DataError) as err:
        backbone.build_model()
    line = str(err.value)
    assert "\n" not in line and line.startswith("someone/absent/w.pt: backbone checkpoint not in the Hugging Face cache")
    assert "HF_HUB_OFFLINE" in line and "hf download someone/absent w.pt" in line and "--set backbone.pretrained=PATH" in line


def test_a_wrong_checksum_and_another_architecture_are_one_line_each(offline_hub):
    place_in_hub_cache(offline_hub, "someone/rs-clip", "model.pt", "rdbench-test")
    wrong = build("backbone/open-clip", architecture="rdbench-test", hub_repo="someone/rs-clip", hub_file="model.pt",
                  sha256="0" * 64)
    with pytest.raises(DataError, match=r"SHA-256 [0-9a-f]{16}\.\.\. is not the 0{16}\.\.\. published for someone/rs-clip/model.pt"):
        wrong.build_model()
    other = build("backbone/open-clip", architecture="ViT-B-32", hub_repo="someone/rs-clip", hub_file="model.pt")
    with pytest.raises(DataError, match=r"model.pt: checkpoint is not a ViT-B-32 state dict"):
        other.build_model()


def test_the_fields_presets_name_their_hub_files():
    expected = {
        "backbone/georsclip-vit-b-32": ("ViT-B-32", "Zilun/GeoRSCLIP", "ckpt/RS5M_ViT-B-32.pt"),
        "backbone/georsclip-vit-h-14": ("ViT-H-14", "Zilun/GeoRSCLIP", "ckpt/RS5M_ViT-H-14.pt"),
        "backbone/remoteclip-rn50": ("RN50", "chendelong/RemoteCLIP", "RemoteCLIP-RN50.pt"),
        "backbone/remoteclip-vit-b-32": ("ViT-B-32", "chendelong/RemoteCLIP", "RemoteCLIP-ViT-B-32.pt"),
        "backbone/remoteclip-vit-l-14": ("ViT-L-14", "chendelong/RemoteCLIP", "RemoteCLIP-ViT-L-14.pt"),
    }
    for key, (arch, repo, filename) in expected.items():
        b = build(key)
        assert (b.architecture, b.hub_repo, b.hub_file) == (arch, repo, filename), key
    for key, (arch, tag) in {"backbone/openclip-vit-b-32-openai": ("ViT-B-32", "openai"),
                             "backbone/openclip-vit-b-16-laion2b": ("ViT-B-16", "laion2b_s34b_b88k")}.items():
        b = build(key)
        assert (b.architecture, b.pretrained) == (arch, tag), key


@pytest.mark.slow  # a ViT-B-32 state dict (600 MB) written and read back
def test_the_georsclip_preset_loads_a_vit_b_32_state_dict_from_the_hub_cache_offline(offline_hub):
    _, state = place_in_hub_cache(offline_hub, "Zilun/GeoRSCLIP", "ckpt/RS5M_ViT-B-32.pt", "ViT-B-32")
    model = build("backbone/georsclip-vit-b-32").build_model()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
