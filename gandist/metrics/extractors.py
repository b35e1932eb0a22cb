"""Feature extractors: torch-fidelity's InceptionV3 with local weights, and our domain classifier."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from unittest import mock

import torch
from torch import nn

if TYPE_CHECKING:
    from gandist.data.config import DataConfig

INCEPTION = "inception-v3-compat"
DOMAIN = "gandist-domain"
# Names accepted without importing torch-fidelity (config validation stays fast).
_KNOWN = (INCEPTION, DOMAIN)
_DOWNLOAD_TIMEOUT_S = 30


def _config_error(message: str) -> Exception:
    from gandist.errors import ConfigError

    return ConfigError(message)


def registered_extractors() -> list[str]:
    """Every feature extractor torch-fidelity knows, ours included."""
    register_domain_extractor()
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    return sorted(FEATURE_EXTRACTORS_REGISTRY)


def check_extractor_name(name: str, weights_path: str | None) -> None:
    """Raise ConfigError for an unknown extractor, or a domain extractor without its file."""
    if name not in _KNOWN and name not in registered_extractors():
        raise _config_error(
            f"unknown eval.extractor {name!r}; choose from [{', '.join(registered_extractors())}]"
        )
    if name == DOMAIN and not weights_path:
        raise _config_error(
            f"eval.extractor={DOMAIN} needs eval.weights_path=extractor.pt, made by "
            "`gandist metrics train-extractor SHARDS --out extractor.pt`"
        )


def register_domain_extractor() -> None:
    """Register `gandist-domain` with torch-fidelity (once per process), so its
    `calculate_metrics(feature_extractor="gandist-domain", ...)` works as for its own extractors."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    from gandist.metrics.domain import FeatureExtractorDomain

    if DOMAIN not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(DOMAIN, FeatureExtractorDomain)


def metric_layers(name: str) -> dict[str, str]:
    """Feature layer per metric ({"fid", "kid"} and "isc" when the extractor gives logits)."""
    register_domain_extractor()
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    cls = FEATURE_EXTRACTORS_REGISTRY[name]
    layers = {m: cls.get_default_feature_layer_for_metric(m) for m in ("fid", "kid")}
    try:
        isc = cls.get_default_feature_layer_for_metric("isc")
    except (KeyError, NotImplementedError):
        isc = None
    if isc is not None and "logits" in isc:  # IS is defined on class probabilities only
        layers["isc"] = isc
    return layers


def create_extractor(
    name: str, layers: list[str], weights_path: str | None, device: torch.device
) -> nn.Module:
    """torch-fidelity's own extractor (its `create_feature_extractor`), on `device`, in eval mode.

    torch-fidelity loads a weights file with `torch.load(weights_only=False)`, which runs any
    code a pickle holds; so it gets only a private copy of the bytes that loaded here with
    `weights_only=True` (or a state dict re-saved from a .safetensors file).
    """
    register_domain_extractor()
    from torch_fidelity.utils import create_feature_extractor

    with _checked_weights(name, weights_path) as checked:
        extractor = create_feature_extractor(
            name,
            sorted(set(layers)),
            cuda=False,
            feature_extractor_weights_path=checked,
            verbose=False,
        )
    return extractor.to(device)


def load_state_dict_safely(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], bytes]:
    """A weights file's state dict and the bytes of a plain torch file holding it, loaded
    without running code: .safetensors through safetensors, anything else with
    `torch.load(weights_only=True)`. Raises ConfigError naming the file otherwise."""
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(str(path))
            buffer = io.BytesIO()
            torch.save(state, buffer)
            return state, buffer.getvalue()
        data = Path(path).read_bytes()
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every failure means: not a weights file we load
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise _config_error(
            f"eval.weights_path={str(path)!r} is not a weights file that loads without running "
            f"code (safetensors, or torch.load with weights_only=True): {reason}"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _config_error(f"eval.weights_path={str(path)!r} holds no state dict of tensors")
    return state, data


@contextlib.contextmanager
def _checked_weights(name: str, weights_path: str | None) -> Iterator[str | None]:
    """`weights_path` for torch-fidelity, as a private copy of checked bytes (see above).
    The domain extractor loads its own file safely (`load_classifier`)."""
    if weights_path is None or name == DOMAIN:
        yield weights_path
        return
    _, data = load_state_dict_safely(weights_path)
    with tempfile.TemporaryDirectory(prefix="gandist-weights-") as folder:
        checked = Path(folder) / "weights.pth"
        checked.write_bytes(data)
        yield str(checked)


def inception_url() -> str:
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return URL_INCEPTION_V3


def inception_hub_path() -> Path:
    """Where torch-fidelity (through torch.hub) looks for downloaded InceptionV3 weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(inception_url())


def missing_inception_message(reason: str) -> str:
    url, name, hub = inception_url(), os.path.basename(inception_url()), inception_hub_path()
    return (
        f"eval.extractor={INCEPTION} needs the InceptionV3 weights, which are not here and could "
        f"not be downloaded ({reason}). On a machine with internet access run\n"
        f"    curl -L -o {name} {url}\n"
        f"then copy {name} to this machine and either put it at\n"
        f"    {hub}\n"
        f"or pass eval.weights_path=/path/to/{name}. "
        f"(Or set eval.extractor={DOMAIN} with a classifier from `gandist metrics train-extractor`, "
        "or eval.every=0 and eval.every_images=0 to train without evaluation.)"
    )


def published_hash_prefix(url_or_name: str) -> str | None:
    """The SHA-256 prefix a published weights file carries in its name (torch.hub's convention,
    `name-<hex>.pth`), or None."""
    match = re.search(r"-([a-f0-9]{8,64})\.[a-z]+$", os.path.basename(url_or_name))
    return match.group(1) if match else None


def check_published_hash(path: str | os.PathLike) -> None:
    """Raise ConfigError when a file named as published InceptionV3 weights is not those bytes."""
    if os.path.basename(path) != os.path.basename(inception_url()):
        return
    prefix = published_hash_prefix(inception_url())
    if prefix and not file_digest(path).startswith(prefix):
        raise _config_error(
            f"{path} is named as torch-fidelity's InceptionV3 weights, but its SHA-256 does not "
            f"start with the published {prefix}: a damaged or substituted file; delete it and "
            "fetch it again"
        )


def resolve_weights(name: str, weights_path: str | None, download: bool = True) -> str | None:
    """The weights file to load for extractor `name`, fetched now if it must be; raises ConfigError.

    Called before training starts, so a cluster without internet fails in seconds with a
    message saying how to fetch the file, instead of at the first evaluation hours later.
    Published InceptionV3 weights (by file name) are checked against the hash in that name,
    downloads included.
    """
    if weights_path:
        if not Path(weights_path).is_file():
            raise _config_error(f"eval.weights_path={weights_path!r} is not a file")
        check_published_hash(weights_path)
        return str(weights_path)
    if name != INCEPTION:
        return None  # other torch-fidelity extractors fetch their own weights
    path = inception_hub_path()
    if path.is_file():
        check_published_hash(path)
        return str(path)
    if not download:
        raise _config_error(missing_inception_message("downloads are off"))
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)  # a firewalled cluster must not hang here
    try:
        torch.hub.download_url_to_file(
            inception_url(),
            str(path),
            hash_prefix=published_hash_prefix(inception_url()),  # checked before the rename
            progress=False,
        )
    except Exception as err:  # noqa: BLE001 - any failure means the same thing to the user
        raise _config_error(missing_inception_message(f"{type(err).__name__}: {err}")) from None
    finally:
        socket.setdefaulttimeout(previous)
    return str(path)


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file (weights identify the feature space in the reference cache key)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_random_inception_weights(path: str | os.PathLike, seed: int = 0) -> Path:
    """Save torch-fidelity's InceptionV3 with random weights as a state dict.

    Real weights cannot be fetched offline; random ones run exactly the same compute, so tests
    and benchmarks use them (their FID values mean nothing, their costs and equalities do).
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    torch.manual_seed(seed)
    # Build the network without loading anything: its constructor would download the weights.
    with (
        mock.patch(
            "torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url",
            lambda *a, **k: {},
        ),
        mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None),
    ):
        model = FeatureExtractorInceptionV3(INCEPTION, ["2048"])
    # He-normal convolutions keep activations at unit scale through the ~20 BasicConv2d layers
    # (PyTorch's default init shrinks them to ~1e-8, where every distance is rounding noise).
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def check_extractor_kind(name: str, weights_path: str | None, data: DataConfig) -> None:
    """Raise ConfigError when the extractor cannot score `data.kind` (images or audio).

    torch-fidelity's own extractors score images; a gandist-domain classifier scores what it
    was trained on, audio at the sample rate it was trained at.
    """
    if name != DOMAIN:
        if data.kind != "image":
            raise _config_error(
                f"eval.extractor={name} scores images, but data.kind={data.kind}: use "
                f"eval.extractor={DOMAIN} with eval.weights_path=extractor.pt from "
                "`gandist metrics train-extractor` on labelled audio shards"
            )
        return
    if not weights_path:
        return  # EvalConfig already says a domain extractor needs its file
    from gandist.metrics.domain import load_classifier

    try:
        classifier, _ = load_classifier(weights_path)
    except (ValueError, RuntimeError, KeyError) as err:
        raise _config_error(f"eval.weights_path: {err}") from None
    if classifier.kind != data.kind:
        raise _config_error(
            f"eval.weights_path={weights_path} is an {classifier.kind} extractor, but "
            f"data.kind={data.kind}: train one on {data.kind} shards with "
            "`gandist metrics train-extractor SHARDS --out extractor.pt`"
        )
    rate = classifier.hparams.get("sample_rate")
    if data.kind == "audio" and rate != data.sample_rate:
        raise _config_error(
            f"eval.weights_path={weights_path} was trained on audio at {rate} Hz, but "
            f"data.sample_rate={data.sample_rate}"
        )


def preflight(extractor: str, weights_path: str | None, data: DataConfig | None = None) -> None:
    """Before training starts: the extractor's weights are here (or fetched) and loadable, and
    (given the data config) it scores that kind of data."""
    if data is not None:
        check_extractor_kind(extractor, weights_path, data)  # before any download
    path = resolve_weights(extractor, weights_path)
    if extractor == DOMAIN:
        from gandist.metrics.domain import load_classifier

        try:
            load_classifier(path)
        except (ValueError, RuntimeError, KeyError) as err:
            raise _config_error(f"eval.weights_path: {err}") from None
    elif path is not None:
        load_state_dict_safely(path)  # what torch-fidelity will be given must load without code
