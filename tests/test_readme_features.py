"""README features outside the training core, each run and checked on what it produces: `data make`
options, `.jpg`/`.webp` members, `::` shard specs, `data inspect` on images, the InceptionV3
extractor with random weights from a file, and `gandist config`."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
import yaml
from PIL import Image

from gandist import cli
from gandist.data.shards import expand_shards
from gandist.data.verify import verify_shards
from gandist.metrics.extractors import (
    INCEPTION,
    create_extractor,
    metric_layers,
    write_random_inception_weights,
)
from gandist.metrics.sharded import (
    Ranks,
    SampleFormat,
    evaluation_latents,
    generated_features,
    real_features,
)
from gandist.training.config import config_reference
from tests.test_data import ids, take
from tests.test_metrics import copy_png_members, write_pngs_by_hand

CPU = torch.device("cpu")

RED, BLUE = (220, 30, 30), (20, 40, 200)


def _solid(size: tuple[int, int], colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", size, colour)


def _close(pixels: np.ndarray, colour: tuple[int, int, int], tolerance: int = 6) -> bool:
    return bool((np.abs(pixels.astype(int) - np.array(colour)) <= tolerance).all())


def _members(shard: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(shard) as archive:
        return [(m.name, archive.extractfile(m).read()) for m in archive.getmembers()]


def test_data_make_pads_writes_jpg_bounds_shard_bytes_and_inspect_draws_the_images(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    src, out = tmp_path / "photos", tmp_path / "shards"
    (src / "blue").mkdir(parents=True)
    (src / "red").mkdir()
    _solid((64, 32), RED).save(src / "red" / "wide.png")  # 2:1, padded above and below
    _solid((16, 48), BLUE).save(src / "blue" / "tall.png")  # 1:3, padded left and right
    rng = np.random.default_rng(0)
    for index in range(12):  # noise compresses badly: about 3 KB of JPEG each
        noise = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(noise).save(src / "red" / f"noise-{index:02d}.png")
    bound = int(0.01 * 1024 * 1024)
    args = ["data", "make", "--from", str(src), "--out", str(out), "--kind", "image", "--size",
            "32", "--fit", "pad", "--format", "jpg", "--workers", "1", "--quiet"]  # fmt: skip
    assert cli.main([*args, "--shard-mb", "0.01"]) == 0
    capsys.readouterr()

    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["count"], manifest["fit"], manifest["classes"]) == (14, "pad", ["blue", "red"])
    shards = sorted(out.glob("*.tar"))
    assert len(shards) == len(manifest["shards"]) >= 3
    members = [member for shard in shards for member in _members(shard)]
    media = [(name, data) for name, data in members if name.endswith((".jpg", ".png"))]
    assert len(media) == 14 and all(name.endswith(".jpg") for name, _ in media)
    assert all(data[:3] == b"\xff\xd8\xff" for _, data in media)  # JPEG files, not PNGs renamed
    # --shard-mb bounds the sample bytes of a shard (WebDataset's ShardWriter counts member
    # payloads, not tar headers): a shard is closed as soon as it holds the bound, so each but
    # the last holds at least the bound, and less before its last sample went in.
    for shard in shards:
        samples: dict[str, int] = {}  # payload bytes per sample key, in order
        for name, data in _members(shard):
            key = name.split(".")[0]
            samples[key] = samples.get(key, 0) + len(data)
        assert sum(list(samples.values())[:-1]) < bound, shard.name
        if shard != shards[-1]:
            assert sum(samples.values()) >= bound, shard.name
    assert sum(s["count"] for s in manifest["shards"]) == 14

    sources = {
        data.decode(): name.split(".")[0] for name, data in members if name.endswith(".src.txt")
    }
    by_key = {}
    for name, data in media:
        image = Image.open(io.BytesIO(data))
        assert image.format == "JPEG" and image.size == (32, 32) and image.mode == "RGB"
        by_key[name.split(".")[0]] = np.asarray(image)
    tall, wide = by_key[sources["blue/tall.png"]], by_key[sources["red/wide.png"]]
    # --fit pad: the whole picture, scaled to fit, centred on black.
    assert _close(wide[10:22], RED) and _close(wide[:6], (0, 0, 0)) and _close(wide[-6:], (0, 0, 0))
    assert _close(tall[:, 14:18], BLUE) and _close(tall[:, :8], (0, 0, 0))
    assert _close(tall[:, -8:], (0, 0, 0))

    # The same source with the default --shard-mb fits in one shard.
    assert cli.main([*args[:5], str(tmp_path / "one"), *args[6:]]) == 0
    assert len(list((tmp_path / "one").glob("*.tar"))) == 1

    # data inspect on images: counts per class, and a contact sheet that shows the samples.
    sheet = tmp_path / "sheet.png"
    assert cli.main(["data", "inspect", str(out), "--out", str(sheet), "--num", "4"]) == 0
    printed = capsys.readouterr().out
    assert f"{len(shards)} shards, 14 good samples" in printed
    assert "  image: 14" in printed
    assert "class   0 blue: 1" in printed and "class   1 red: 13" in printed
    pixels = np.asarray(Image.open(sheet).convert("RGB"))
    assert pixels.shape == (2 * (96 + 12), 2 * 96, 3)  # 2 x 2 tiles of 96 px, 12 px captions
    # Each tile is one sample of the set (drawn at random from all of it), 32 px shown at 96.
    shown = set()
    for index in range(4):
        top, left = (index // 2) * (96 + 12), (index % 2) * 96
        tile = pixels[top : top + 96, left : left + 96]
        matches = [
            key for key, image in by_key.items()
            if np.array_equal(tile, image.repeat(3, axis=0).repeat(3, axis=1))
        ]  # fmt: skip
        assert matches, f"tile {index} shows no sample of the set"
        shown.add(matches[0])
    assert len(shown) == 4


def test_jpg_jpeg_and_webp_members_stream_like_png(tmp_path: Path) -> None:
    colours = {"png": RED, "jpg": BLUE, "jpeg": (30, 200, 60), "webp": (240, 240, 20)}
    shard = tmp_path / "formats.tar"
    with wds.TarWriter(str(shard)) as writer:
        for index, (ext, colour) in enumerate(colours.items()):
            buffer = io.BytesIO()
            pil_format = {"jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "png": "PNG"}[ext]
            _solid((16, 16), colour).save(buffer, format=pil_format)
            writer.write({"__key__": f"{index:02d}-{ext}", ext: buffer.getvalue(), "cls": index})
    assert verify_shards(str(shard)).num_samples == 4
    batch = take(shard, 1, batch_size=4, shuffle_buffer=0, resolution=16)[0]
    assert batch["image"].shape == (4, 3, 16, 16)
    for key, image, label in zip(batch["key"], batch["image"], batch["label"], strict=True):
        ext = key.split("-")[1]
        assert label.item() == list(colours).index(ext)
        pixels = ((image + 1) * 127.5).permute(1, 2, 0).numpy()  # [-1, 1] -> 0..255
        assert _close(pixels, colours[ext], tolerance=8), ext


def test_shard_specs_joined_with_double_colon_stream_exactly_those_shards(
    glyph_shards: Path,
) -> None:
    first = glyph_shards / "glyphs-000000.tar"
    spec = f"{first}::{glyph_shards}/glyphs-{{000002..000003}}.tar::pipe:cat {first}"
    urls = expand_shards(spec)
    assert urls == [
        str(first),
        str(glyph_shards / "glyphs-000002.tar"),
        str(glyph_shards / "glyphs-000003.tar"),
        f"pipe:cat {first}",
    ]
    assert verify_shards(spec).num_samples == 4 * 32
    read = ids(take(spec, 16, batch_size=8, shuffle_buffer=0))  # one epoch: 128 samples
    expected = []
    for url in urls:
        with tarfile.open(url.removeprefix("pipe:cat ")) as archive:
            keys = {m.name.split(".")[0] for m in archive.getmembers()}
        expected += [(Path(url).name, key) for key in keys]
    assert sorted(read) == sorted(expected)
    with pytest.raises(ValueError, match="missing.tar"):
        expand_shards(f"{first}::{glyph_shards}/missing.tar")


def test_default_inception_extractor_computes_features_with_random_weights_from_a_file(
    tmp_path: Path, glyph_shards: Path
) -> None:
    """No download: InceptionV3 on random (unit-scale) weights written to a file. gandist's
    evaluation path (its real-sample decoding, generation and uint8 conversion) gives the very
    features torch-fidelity computes from PNG folders read by its own loader. (FID itself is not
    taken here: its 2048-wide eigendecomposition alone costs tens of seconds on these CPUs.)"""
    from torch_fidelity.utils import extract_featuresdict_from_input_id

    from tests.scripts.metrics_two_ranks import tiny_generator

    weights = write_random_inception_weights(tmp_path / "inception-random.pth")
    state = torch.load(weights, map_location="cpu")
    layers = metric_layers(INCEPTION)
    assert layers == {"fid": "2048", "kid": "2048", "isc": "logits_unbiased"}
    extractor = create_extractor(INCEPTION, list(layers.values()), str(weights), CPU)
    loaded = extractor.state_dict()
    assert all(torch.equal(loaded[name], value) for name, value in state.items())

    num = 3  # InceptionV3 at 299 px costs about 1 s an image on these CPUs
    ranks = Ranks(0, 1, CPU)
    generator = tiny_generator().eval()
    ours = {
        "fake": generated_features(
            generator, extractor, ranks, num=num, latent_dim=16, batch_size=num, seed=0
        ),
        "real": real_features(
            str(glyph_shards), extractor, ranks, fmt=SampleFormat(), num=num, batch_size=num
        ),
    }
    latents, _ = evaluation_latents(num, 16, 0, seed=0)
    with torch.no_grad():
        raw = generator(latents).numpy()
    folders = {
        "fake": write_pngs_by_hand(raw, tmp_path / "fakes"),
        "real": copy_png_members(glyph_shards, num, tmp_path / "reals"),
    }
    for side, folder in folders.items():
        expected = extract_featuresdict_from_input_id(
            1, extractor, input1=str(folder), batch_size=num, cuda=False, save_cpu_ram=True,
            verbose=False,
        )  # fmt: skip
        for layer in ("2048", "logits_unbiased"):
            assert ours[side][layer].shape == expected[layer].shape, (side, layer)
            torch.testing.assert_close(ours[side][layer], expected[layer], rtol=1e-5, atol=1e-5)
        # He-initialised weights: features of about 1e-2, not the ~1e-8 of PyTorch's default init.
        assert ours[side]["2048"].abs().mean() > 1e-3
    real, fake = ours["real"]["2048"], ours["fake"]["2048"]
    assert (fake - real).abs().mean() > 0.02 * real.abs().mean()  # they tell images apart


def test_gandist_config_prints_the_resolved_config_and_the_reference(
    capsys: pytest.CaptureFixture,
) -> None:
    assert cli.main(["config", "configs/wgan-gp.yaml", "train.steps=7", "optim.g_lr=0.003"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["steps"] == 7 and printed["optim"]["g_lr"] == 0.003
    # YAML over the defaults: the file's values, and a default the file does not set.
    assert printed["model"]["name"] == "wgan-gp" and printed["train"]["loss"] == "wasserstein"
    assert printed["optim"]["d_lr"] == 1.0e-4 and printed["train"]["n_critic"] == 5
    assert printed["optim"]["lr_schedule"] == "constant"
    assert printed["run_name"] == "wgan-gp"
    assert cli.main(["config", "--reference"]) == 0
    reference = capsys.readouterr().out
    assert reference == config_reference()
    assert reference.startswith("| key | default | meaning |")
    assert "| `train.steps` |" in reference and "| `data.shards` |" in reference
    assert cli.main(["config"]) == 2
    assert "give a CONFIG file" in capsys.readouterr().err
