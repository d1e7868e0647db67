"""CLAP audio embedding (LAION-CLAP HTSAT audio tower) from a local checkpoint.

Checkpoint formats (``settings.clap_checkpoint``):

- a Hugging Face directory of ``ClapModel`` or ``ClapAudioModelWithProjection``
  (``config.json`` + weights), loaded with ``ClapAudioModelWithProjection.from_pretrained``;
- an original laion-clap ``.pt``/``.ckpt`` file (``{"state_dict": {"module.audio_branch...": ...}}``),
  whose audio keys are renamed to the transformers layout with the mapping of transformers'
  ``convert_clap_original_pytorch_to_hf.py``; the architecture (widths, depths, heads,
  window, projection size, fusion) is read from the tensor shapes.

Features are computed in torch on the model's device, as ``ClapFeatureExtractor`` does for
one clip of at most 10 s: 48 kHz audio, power STFT (1024-point periodic Hann, hop 480,
centred with reflection padding), 64 mel bands from 0 to 14 kHz (Slaney scale and norm for
non-fusion models, HTK without norm for fusion models), ``10 log10(max(mel, 1e-10))``; a clip
shorter than 10 s is repeated to fill 10 s and zero padded ("repeatpad"); a fusion model
gets the same mel four times (its input for clips that need no fusion).

Longer inputs are cut into consecutive 10 s windows (a final window shorter than 1 s is
dropped unless it is the only one), embedded as one batch, and the L2-normalised window
embeddings are averaged and normalised again. This is deterministic, unlike the feature
extractor's random crops ("rand_trunc"/"fusion").
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torchaudio.functional as AF

from audioproc.errors import ClapCheckpointError, ClapUnavailableError
from audioproc.extractors.base import Extractor, ExtractorOutput

if TYPE_CHECKING:
    from transformers import ClapAudioModelWithProjection

SAMPLE_RATE = 48_000
WINDOW_S = 10
WINDOW_SAMPLES = WINDOW_S * SAMPLE_RATE
MIN_TAIL_SAMPLES = SAMPLE_RATE  # a last window shorter than 1 s adds nothing reliable
N_FFT = 1024
HOP_LENGTH = 480
N_MELS = 64
F_MIN, F_MAX = 0.0, 14_000.0
MEL_FLOOR = 1e-10
BATCH_WINDOWS = 16


# Renaming of laion-clap keys to transformers' (transformers' convert_clap_original_pytorch_to_hf.py).
_KEY_RENAMES = (
    ("audio_branch", "audio_model.audio_encoder"),
    ("attn", "attention.self"),
    ("self.proj", "output.dense"),
    ("attention.self_mask", "attn_mask"),
    ("mlp.fc1", "intermediate.dense"),
    ("mlp.fc2", "output.dense"),
    ("norm1", "layernorm_before"),
    ("norm2", "layernorm_after"),
    ("bn0", "batch_norm"),
)
_PROJECTION = re.compile(r"^audio_projection\.(\d+)\.")


def laion_to_transformers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The audio tower and projection of a laion-clap state dict, with transformers' key names.

    Text-branch and other keys are dropped; ``qkv`` tensors are split into query, key, value.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if not key.startswith(("audio_branch.", "audio_projection.")):
            continue
        for old, new in _KEY_RENAMES:
            key = key.replace(old, new)
        match = _PROJECTION.match(key)
        if match:
            index = int(match.group(1))
            key = _PROJECTION.sub(f"audio_projection.linear{1 if index == 0 else 2}.", key)
        if ".qkv." in key:
            for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0), strict=True):
                out[key.replace("qkv", name)] = part
        else:
            out[key] = value
    return out


def audio_config_from_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """ClapAudioConfig arguments that reproduce the architecture of a (renamed) state dict."""
    prefix = "audio_model.audio_encoder."
    depths: dict[int, set[int]] = {}
    heads: dict[int, int] = {}
    window = 8
    for key, value in state_dict.items():
        m = re.match(re.escape(prefix) + r"layers\.(\d+)\.blocks\.(\d+)\.", key)
        if m:
            depths.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
            if key.endswith("relative_position_bias_table"):
                heads[int(m.group(1))] = value.shape[1]
                window = (int(round(value.shape[0] ** 0.5)) + 1) // 2
    try:
        patch = state_dict[prefix + "patch_embed.proj.weight"]
        projection = state_dict["audio_projection.linear1.weight"]
        fc1 = state_dict[prefix + "layers.0.blocks.0.intermediate.dense.weight"]
    except KeyError as missing:
        raise ClapCheckpointError(f"not a CLAP audio checkpoint: no {missing.args[0]!r}") from None
    n_layers = len(depths)
    return {
        "patch_embeds_hidden_size": patch.shape[0],
        "patch_size": patch.shape[-1],
        "patch_stride": (patch.shape[-2], patch.shape[-1]),
        "depths": [len(depths[i]) for i in range(n_layers)],
        "num_attention_heads": [heads[i] for i in range(n_layers)],
        "window_size": window,
        "mlp_ratio": fc1.shape[0] / patch.shape[0],
        "hidden_size": projection.shape[1],
        "projection_dim": projection.shape[0],
        "enable_fusion": any("fusion_model" in k or "mel_conv2d" in k for k in state_dict),
    }


def load_clap_audio_model(path: Path) -> ClapAudioModelWithProjection:
    """The CLAP audio tower with projection, in eval mode on CPU, from a local checkpoint."""
    from transformers import ClapAudioConfig, ClapAudioModelWithProjection

    if not path.exists():
        raise ClapUnavailableError(f"CLAP checkpoint {path} does not exist")
    if path.is_dir():
        try:
            return _for_inference(ClapAudioModelWithProjection.from_pretrained(path))
        except (OSError, ValueError) as error:
            raise ClapCheckpointError(
                f"cannot load CLAP checkpoint directory {path}: {error}"
            ) from error
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors have many types
        raise ClapCheckpointError(f"cannot read CLAP checkpoint file {path}: {error}") from error
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict):
        raise ClapCheckpointError(f"{path} holds no state dict")
    renamed = laion_to_transformers(state)
    model = ClapAudioModelWithProjection(ClapAudioConfig(**audio_config_from_state_dict(renamed)))
    result = model.load_state_dict(renamed, strict=False)
    missing = [
        k
        for k in result.missing_keys
        if not k.endswith(("relative_position_index", "num_batches_tracked"))
    ]
    if missing:
        raise ClapCheckpointError(f"{path} lacks {len(missing)} audio weights, e.g. {missing[:3]}")
    return _for_inference(model)


def _for_inference(model: ClapAudioModelWithProjection) -> ClapAudioModelWithProjection:
    """``model.eval()``; transformers' override of ``eval`` is unannotated, the base method is
    the same call (``self.train(False)``, which transformers does override)."""
    return torch.nn.Module.eval(model)


@cache
def _model_on(path: str, device: str) -> ClapAudioModelWithProjection:
    model = load_clap_audio_model(Path(path))
    # transformers wraps Module.to with functools.wraps, whose typing takes the method's
    # first argument for `self`: the call is Module.to(device), which moves `model` in place.
    model.to(device)  # type: ignore[arg-type]  # see above
    return model


def clap_log_mel(windows: torch.Tensor, fusion: bool) -> torch.Tensor:
    """Log-mel input of the CLAP audio tower for 10 s windows.

    Args:
        windows: float32, shape ``(batch, 480_000)`` at 48 kHz.
        fusion: the model's ``enable_fusion``.

    Returns:
        shape ``(batch, 4 if fusion else 1, 1001, 64)``, dB re 1.0.
    """
    window = torch.hann_window(N_FFT, periodic=True, device=windows.device)
    spec = torch.stft(
        windows,
        N_FFT,
        HOP_LENGTH,
        window=window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    if fusion:
        fbank = AF.melscale_fbanks(
            N_FFT // 2 + 1, F_MIN, F_MAX, N_MELS, SAMPLE_RATE, norm=None, mel_scale="htk"
        )
    else:
        fbank = AF.melscale_fbanks(
            N_FFT // 2 + 1, F_MIN, F_MAX, N_MELS, SAMPLE_RATE, norm="slaney", mel_scale="slaney"
        )
    mel = spec.abs().square().transpose(1, 2) @ fbank.to(windows.device)  # (batch, frames, mels)
    db = 10.0 * torch.log10(mel.clamp(min=MEL_FLOOR))
    return db[:, None].expand(-1, 4 if fusion else 1, -1, -1)


def ten_second_windows(audio: torch.Tensor) -> torch.Tensor:
    """Consecutive 10 s windows, shape ``(n_windows, 480_000)``; short ones are repeat-padded.

    A window shorter than 10 s is tiled ``floor(10 s / length)`` times and zero padded, as
    ``ClapFeatureExtractor(padding="repeatpad")``.
    """
    starts = list(range(0, max(1, audio.numel()), WINDOW_SAMPLES))
    pieces = [audio[s : s + WINDOW_SAMPLES] for s in starts]
    if len(pieces) > 1 and pieces[-1].numel() < MIN_TAIL_SAMPLES:
        pieces.pop()
    out = []
    for piece in pieces:
        if piece.numel() < WINDOW_SAMPLES:
            piece = piece.repeat(WINDOW_SAMPLES // piece.numel())
            piece = torch.nn.functional.pad(piece, (0, WINDOW_SAMPLES - piece.numel()))
        out.append(piece)
    return torch.stack(out)


class ClapExtractor(Extractor):
    """512-d (the checkpoint's projection size) LAION-CLAP audio embedding of the whole input.

    Features: ``embedding_dim``, ``n_windows`` (10 s windows averaged), ``checkpoint`` (file
    or directory name). Artifacts: ``embedding`` float32 ``(embedding_dim,)``, unit L2 norm.
    """

    name = "clap"
    sample_rate = SAMPLE_RATE

    def _model(self, device: torch.device) -> ClapAudioModelWithProjection:
        reason = self.unavailable_reason()
        if reason is not None:
            raise ClapUnavailableError(reason)
        return _model_on(str(self.settings.clap_checkpoint), str(device))

    def extract(self, audio: torch.Tensor, device: torch.device) -> ExtractorOutput:
        return self.extract_batch([audio], device)[0]

    def extract_batch(
        self, audios: list[torch.Tensor], device: torch.device
    ) -> list[ExtractorOutput]:
        """Embeds the 10 s windows of all inputs in shared batches, then averages per input."""
        model = self._model(device)
        for audio in audios:
            if audio.numel() == 0:
                raise ValueError("a CLAP embedding needs at least one sample")
        windows = [ten_second_windows(a.to(device=device, dtype=torch.float32)) for a in audios]
        counts = [w.shape[0] for w in windows]
        every_window = torch.cat(windows)
        fusion = bool(model.config.enable_fusion)
        embeddings = []
        with torch.inference_mode():
            for start in range(0, every_window.shape[0], BATCH_WINDOWS):
                mel_input = clap_log_mel(every_window[start : start + BATCH_WINDOWS], fusion)
                is_longer = torch.zeros(mel_input.shape[0], 1, dtype=torch.bool, device=device)
                out = model(input_features=mel_input, is_longer=is_longer)
                embeddings.append(torch.nn.functional.normalize(out.audio_embeds, dim=-1))
        per_window = torch.cat(embeddings)
        results = []
        name = Path(self.settings.clap_checkpoint or "").name
        for chunk in torch.split(per_window, counts):
            embedding = torch.nn.functional.normalize(chunk.mean(dim=0), dim=0)
            features = {
                "embedding_dim": int(embedding.numel()),
                "n_windows": int(chunk.shape[0]),
                "checkpoint": name,
            }
            results.append(
                ExtractorOutput(features, {"embedding": embedding.float().cpu().numpy()})
            )
        return results
