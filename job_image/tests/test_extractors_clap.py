"""CLAP: a tiny randomly initialised model saved in both checkpoint formats, loaded by the real loader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from extractor_testing import DEVICES, as_tensor, harmonic_tone, settings
from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

from audioproc.extractors.clap import ClapCheckpointError, ClapExtractor, ClapUnavailableError

SR = 48_000


def _tiny_config(fusion: bool = False) -> ClapConfig:
    return ClapConfig(
        audio_config={
            "depths": [1, 1],
            "num_attention_heads": [2, 4],
            "patch_embeds_hidden_size": 16,
            "hidden_size": 32,
            "enable_fusion": fusion,
            "window_size": 4,
        },
        text_config={
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 37,
        },
        projection_dim=24,
    )


def _laion_state_dict(model: ClapModel) -> dict[str, torch.Tensor]:
    """The model's audio weights named as laion-clap names them (the inverse of the loader's renaming)."""
    out: dict[str, torch.Tensor] = {}
    state = model.state_dict()
    for key, value in state.items():
        if not key.startswith(("audio_model.", "audio_projection.")):
            continue
        if (
            key.endswith(("relative_position_index", "num_batches_tracked"))
            or ".key." in key
            or ".value." in key
        ):
            continue
        laion = key.replace("audio_model.audio_encoder.", "audio_branch.")
        laion = laion.replace("audio_projection.linear1.", "audio_projection.0.").replace(
            "audio_projection.linear2.", "audio_projection.2."
        )
        laion = laion.replace("attention.output.dense", "attn.proj").replace(
            "attention.self.", "attn."
        )
        laion = laion.replace("layernorm_before", "norm1").replace("layernorm_after", "norm2")
        laion = (
            laion.replace("intermediate.dense", "mlp.fc1")
            .replace("output.dense", "mlp.fc2")
            .replace("batch_norm", "bn0")
        )
        if ".query." in key:
            parts = [state[key.replace(".query.", f".{p}.")] for p in ("query", "key", "value")]
            laion, value = laion.replace("query", "qkv"), torch.cat(parts)
        out["module." + laion] = value.clone()
    # Keys the original checkpoints carry that the audio tower does not use.
    out["module.audio_branch.spectrogram_extractor.stft.conv_real.weight"] = torch.zeros(
        513, 1, 1024
    )
    out["module.text_branch.embeddings.word_embeddings.weight"] = torch.zeros(10, 32)
    out["module.logit_scale_a"] = torch.tensor(1.0)
    return out


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory: pytest.TempPathFactory) -> tuple[ClapModel, Path, Path]:
    torch.manual_seed(0)
    model = ClapModel(_tiny_config()).eval()
    root = tmp_path_factory.mktemp("clap")
    model.save_pretrained(root / "hf")
    torch.save({"epoch": 1, "state_dict": _laion_state_dict(model)}, root / "tiny.pt")
    return model, root / "hf", root / "tiny.pt"


def _reference_embedding(model: ClapModel, audio: np.ndarray) -> np.ndarray:
    extractor = ClapFeatureExtractor(truncation="rand_trunc")  # deterministic for clips <= 10 s
    inputs = extractor(audio, sampling_rate=SR, return_tensors="pt")
    with torch.inference_mode():
        out = model.get_audio_features(input_features=inputs["input_features"].float())
    features = out.pooler_output if hasattr(out, "pooler_output") else out
    return features[0].numpy()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("checkpoint", ["hf", "laion"])
@pytest.mark.parametrize("seconds", [3.0, 10.0])
def test_embedding_equals_transformers(
    tiny_clap, checkpoint: str, seconds: float, device: str
) -> None:
    model, hf_dir, laion_file = tiny_clap
    t = np.arange(int(seconds * SR)) / SR
    audio = (harmonic_tone(np.full(t.size, 330.0), SR) + 0.05 * np.sin(2 * np.pi * 3 * t)).astype(
        np.float32
    )
    extractor = ClapExtractor(
        settings(clap_checkpoint=hf_dir if checkpoint == "hf" else laion_file)
    )
    assert extractor.unavailable_reason() is None
    out = extractor.extract(as_tensor(audio, device), torch.device(device))
    expected = _reference_embedding(model, audio)
    embedding = out.artifacts["embedding"]
    assert embedding.shape == (model.config.projection_dim,) == (out.features["embedding_dim"],)
    np.testing.assert_allclose(embedding, expected, atol=2e-4)
    json.dumps(out.features, allow_nan=False)


def test_long_input_is_windowed_and_batched_across_items(tiny_clap) -> None:
    model, hf_dir, _ = tiny_clap
    rng = np.random.default_rng(0)
    long_audio = (0.1 * rng.standard_normal(25 * SR)).astype(np.float32)
    short_audio = long_audio[: 4 * SR]
    extractor = ClapExtractor(settings(clap_checkpoint=hf_dir))
    batch = extractor.extract_batch(
        [as_tensor(long_audio, "cpu"), as_tensor(short_audio, "cpu")], torch.device("cpu")
    )
    assert [o.features["n_windows"] for o in batch] == [3, 1]
    windows = [long_audio[: 10 * SR], long_audio[10 * SR : 20 * SR], long_audio[20 * SR :]]
    mean = np.mean([_reference_embedding(model, w) for w in windows], axis=0)
    np.testing.assert_allclose(
        batch[0].artifacts["embedding"], mean / np.linalg.norm(mean), atol=2e-4
    )
    single = extractor.extract(as_tensor(short_audio, "cpu"), torch.device("cpu"))
    np.testing.assert_allclose(
        batch[1].artifacts["embedding"], single.artifacts["embedding"], atol=1e-5
    )


def test_fusion_checkpoint_loads_from_laion_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = ClapModel(_tiny_config(fusion=True)).eval()
    torch.save({"state_dict": _laion_state_dict(model)}, tmp_path / "fusion.pt")
    out = ClapExtractor(settings(clap_checkpoint=tmp_path / "fusion.pt")).extract(
        torch.zeros(2 * SR) + 0.01, torch.device("cpu")
    )
    assert out.artifacts["embedding"].shape == (24,)
    assert np.linalg.norm(out.artifacts["embedding"]) == pytest.approx(1.0, abs=1e-5)


def test_unconfigured_and_missing_checkpoint_are_clear_errors(tmp_path: Path) -> None:
    unconfigured = ClapExtractor(settings())
    assert "CLAP_CHECKPOINT" in (unconfigured.unavailable_reason() or "")
    with pytest.raises(ClapUnavailableError, match="no CLAP checkpoint configured"):
        unconfigured.extract(torch.zeros(SR), torch.device("cpu"))
    missing = ClapExtractor(settings(clap_checkpoint=tmp_path / "nope.pt"))
    assert "does not exist" in (missing.unavailable_reason() or "")


def test_a_file_that_is_not_a_clap_checkpoint_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ClapCheckpointError, match="cannot read"):
        ClapExtractor(settings(clap_checkpoint=tmp_path / "junk.pt")).extract(
            torch.zeros(SR), torch.device("cpu")
        )
    torch.save({"state_dict": {"module.text_branch.x": torch.zeros(1)}}, tmp_path / "text_only.pt")
    with pytest.raises(ClapCheckpointError, match="not a CLAP audio checkpoint"):
        ClapExtractor(settings(clap_checkpoint=tmp_path / "text_only.pt")).extract(
            torch.zeros(SR), torch.device("cpu")
        )
