"""Files other people made never run code here: a pickle in the reference cache or in extractor
weights is refused unexecuted, and published weights are checked against their hash."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import pytest
import torch

from gandist.data.config import DataConfig
from gandist.data.shards import write_shards
from gandist.data.synthetic import glyph_samples
from gandist.errors import ConfigError
from gandist.metrics import extractors
from gandist.metrics.config import EvalConfig
from gandist.metrics.domain import ImageClassifier, save_classifier
from gandist.metrics.evaluate import Evaluator
from gandist.metrics.extractors import (
    DOMAIN,
    INCEPTION,
    create_extractor,
    resolve_weights,
    write_random_inception_weights,
)


class Payload:
    """A pickle that, when loaded by a full unpickler, creates `marker` (stands for any code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def hostile_files(folder: Path, marker: Path) -> list[Path]:
    """A raw pickle and a torch.save zip file, each holding the payload; checked to be live."""
    raw, zipped = folder / "raw.pkl", folder / "zipped.pt"
    raw.write_bytes(pickle.dumps({"description": {}, "x": Payload(marker)}))
    torch.save({"description": {}, "x": Payload(marker)}, zipped)
    probe = folder / "probe"
    pickle.loads(pickle.dumps(Payload(probe)))  # the payload works: this test can fail
    assert probe.exists()
    return [raw, zipped]


def test_a_reference_cache_holding_a_pickle_is_refused_and_never_run(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    write_shards(glyph_samples(32, size=32, seed=5), shards, "glyphs", max_count=32)
    torch.manual_seed(3)
    extractor = save_classifier(
        ImageClassifier(channels=3, resolution=32, num_classes=10, width=8), tmp_path / "e.pt"
    )
    cfg = EvalConfig(
        extractor=DOMAIN, weights_path=str(extractor), num_real=32, batch_size=16,
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    data = DataConfig(shards=str(shards), resolution=32)
    marker = tmp_path / "marker"
    path, _ = Evaluator(cfg, data).cache_path()
    path.parent.mkdir(parents=True)
    for hostile in hostile_files(tmp_path, marker):
        path.write_bytes(hostile.read_bytes())  # where the evaluator looks for its cache
        evaluator = Evaluator(cfg, data)
        evaluator.prepare()
        assert evaluator.cache_hit is False and not marker.exists()
    # The recomputed entry replaced the hostile file, and it is read back as a hit.
    again = Evaluator(cfg, data)
    again.prepare()
    assert again.cache_hit is True and not marker.exists()


def test_extractor_weights_holding_a_pickle_are_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    for hostile in hostile_files(tmp_path, marker):
        with pytest.raises(ConfigError, match="not a weights file that loads without running"):
            create_extractor(INCEPTION, ["2048"], str(hostile), torch.device("cpu"))
        with pytest.raises(ConfigError, match="weights_only=True"):
            extractors.preflight(INCEPTION, str(hostile))
        assert not marker.exists()
    # Plain weights (torch.save of a state dict, or safetensors) still load.
    weights = write_random_inception_weights(tmp_path / "inception.pth")
    model = create_extractor(INCEPTION, ["2048"], str(weights), torch.device("cpu"))
    expected = torch.load(weights, weights_only=True)["fc.weight"]
    assert torch.equal(model.fc.weight, expected)
    from safetensors.torch import save_file

    save_file(torch.load(weights, weights_only=True), tmp_path / "inception.safetensors")
    model = create_extractor(
        INCEPTION, ["2048"], str(tmp_path / "inception.safetensors"), torch.device("cpu")
    )
    assert torch.equal(model.fc.weight, expected)


def test_published_weights_are_checked_against_the_hash_in_their_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    hub = extractors.inception_hub_path()
    hub.parent.mkdir(parents=True)
    hub.write_bytes(b"not the published weights")
    with pytest.raises(ConfigError, match="SHA-256 does not start with the published 6726825d"):
        resolve_weights(INCEPTION, None)
    with pytest.raises(ConfigError, match="published 6726825d"):
        resolve_weights(INCEPTION, str(hub))  # the same file given by path
    hub.unlink()

    # Downloads: a file served (here from disk) whose bytes do not match is never kept.
    served = tmp_path / "served"
    served.mkdir()
    good = b"weights as published"
    name = f"weights-x-{hashlib.sha256(good).hexdigest()[:8]}.pth"
    (served / name).write_bytes(b"weights as tampered with")
    monkeypatch.setattr(extractors, "inception_url", lambda: (served / name).as_uri())
    with pytest.raises(ConfigError, match="invalid hash value"):
        resolve_weights(INCEPTION, None)
    assert not extractors.inception_hub_path().exists()
    (served / name).write_bytes(good)
    assert Path(resolve_weights(INCEPTION, None)).read_bytes() == good
