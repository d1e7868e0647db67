"""Block processing: every extractor gives the same features whether long audio is cut into
blocks or not (a small block size on a short signal stands in for a long input)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from extractor_testing import add_white_noise, drum_pattern, harmonic_tone, settings

from audioproc.extractors.registry import get_extractor

# Blocks of 1 s (2.5 s for pitch, whose Viterbi segments are 2.5 s): several per signal,
# the last one partial.
SMALL_BLOCK_S = {"spectral": 1.0, "mfcc": 1.0, "loudness": 1.0, "tempo": 1.0, "pitch": 2.5}
DURATION_S = 9.3


def _signal(sample_rate: int) -> np.ndarray:
    """Drums plus a gliding harmonic tone in noise: every extractor has something to measure."""
    n = int(DURATION_S * sample_rate)
    f0 = np.linspace(110.0, 330.0, n)
    tone = harmonic_tone(f0, sample_rate)
    return add_white_noise(
        0.5 * tone + 0.5 * drum_pattern(124.0, DURATION_S, sample_rate)[:n], 20.0
    )


def _outputs(name: str, block_s: float | None):
    extractor = get_extractor(name, settings())
    audio = torch.as_tensor(_signal(extractor.sample_rate), dtype=torch.float32)
    original = extractor.block_s
    try:
        if block_s is not None:
            extractor.block_s = block_s
        else:
            extractor.block_s = 1e9  # one block: unblocked processing
        return extractor.extract(audio, torch.device("cpu"))
    finally:
        extractor.block_s = original


def _assert_close(blocked: object, whole: object, path: str) -> None:
    if isinstance(whole, dict):
        assert isinstance(blocked, dict) and blocked.keys() == whole.keys(), path
        for key in whole:
            _assert_close(blocked[key], whole[key], f"{path}.{key}")
    elif isinstance(whole, (list, tuple, np.ndarray)):
        np.testing.assert_allclose(
            np.asarray(blocked, dtype=np.float64),
            np.asarray(whole, dtype=np.float64),
            rtol=1e-4,
            atol=1e-5,
            err_msg=path,
        )
    elif isinstance(whole, float):
        assert blocked == pytest.approx(whole, rel=1e-4, abs=1e-5), path
    else:
        assert blocked == whole, path


@pytest.mark.parametrize("name", sorted(SMALL_BLOCK_S))
def test_blocked_equals_unblocked(name: str) -> None:
    whole = _outputs(name, None)
    blocked = _outputs(name, SMALL_BLOCK_S[name])
    _assert_close(blocked.features, whole.features, name)
    assert blocked.artifacts.keys() == whole.artifacts.keys()
    for key, array in whole.artifacts.items():
        _assert_close(blocked.artifacts[key], array, f"{name}.{key}")
