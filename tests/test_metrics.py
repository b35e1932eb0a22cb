"""FID / KID / IS: sharded scores equal torch-fidelity's, reference cache, extractors, eval in training."""

from __future__ import annotations

import functools
import io
import itertools
import json
import math
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor

from gandist import cli, rundir
from gandist.data.config import DataConfig
from gandist.data.shards import expand_shards, write_shards
from gandist.data.synthetic import glyph_samples
from gandist.errors import ConfigError
from gandist.metrics import sharded
from gandist.metrics.config import EvalConfig
from gandist.metrics.domain import (
    AudioClassifier,
    ImageClassifier,
    load_classifier,
    save_classifier,
)
from gandist.metrics.evaluate import EvalPacer, Evaluator
from gandist.metrics.extractors import (
    DOMAIN,
    INCEPTION,
    check_extractor_kind,
    register_domain_extractor,
    resolve_weights,
)
from gandist.metrics.sharded import Ranks, SampleFormat, evaluation_latents, to_extractor_input
from gandist.models import generate
from gandist.training.config import load_config
from tests.conftest import run, tiny_overrides
from tests.scripts.metrics_two_ranks import eval_config, tiny_audio_generator, tiny_generator

SCRIPT = Path(__file__).parent / "scripts" / "metrics_two_ranks.py"


@pytest.fixture(scope="module")
def random_extractor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained (random-weights) domain classifier: a small registered torch-fidelity extractor."""
    torch.manual_seed(3)
    model = ImageClassifier(channels=3, resolution=32, num_classes=10, width=8)
    for module in model.modules():  # unit-scale activations, so distances are not rounding noise
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return save_classifier(model, tmp_path_factory.mktemp("extractor") / "extractor.pt")


@pytest.fixture(scope="module")
def tone_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """256 labelled tones (8 classes, 16 kHz, 16384 samples) in 4 shards, with their manifest."""
    out = tmp_path_factory.mktemp("tones")
    assert cli.main(
        ["data", "synth", "tones", "--out", str(out), "--num", "256", "--shard-size", "64",
         "--workers", "1", "--quiet"]
    ) == 0  # fmt: skip
    return out


@pytest.fixture(scope="module")
def random_audio_extractor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained audio classifier with unit-scale activations: a registered audio extractor."""
    torch.manual_seed(4)
    model = AudioClassifier(sample_rate=16000, length=16384, num_classes=8, width=4)
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv1d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return save_classifier(model, tmp_path_factory.mktemp("audio_extractor") / "extractor.pt")


@pytest.fixture(scope="module")
def trained_audio_extractor(tmp_path_factory: pytest.TempPathFactory, tone_shards: Path) -> Path:
    """A tone classifier trained by the CLI for a few seconds; the kind comes from the manifest."""
    out = tmp_path_factory.mktemp("trained_audio") / "extractor.pt"
    assert cli.main(
        ["metrics", "train-extractor", str(tone_shards), "--out", str(out), "--steps", "100",
         "--batch-size", "32", "--lr", "5e-3", "--quiet"]
    ) == 0  # fmt: skip
    return out


@pytest.fixture(scope="module")
def trained_extractor(tmp_path_factory: pytest.TempPathFactory, glyph_shards: Path) -> Path:
    """A glyph classifier trained by the CLI for a few seconds."""
    out = tmp_path_factory.mktemp("trained") / "extractor.pt"
    assert cli.main(
        ["metrics", "train-extractor", str(glyph_shards), "--out", str(out), "--steps", "100",
         "--width", "8", "--batch-size", "32", "--lr", "5e-3", "--quiet"]
    ) == 0  # fmt: skip
    return out


class Samples(Dataset):
    """torch-fidelity's input: a Dataset of uint8 [3, H, W] images or float [1, L] clips."""

    def __init__(self, samples: torch.Tensor) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.samples[index]


@functools.cache
def first_real_images(shards: Path, num: int) -> torch.Tensor:
    """The first `num` images of the sorted shards, decoded by WebDataset alone: uint8 [N, 3, 32, 32]."""
    dataset = wds.WebDataset(expand_shards(str(shards)), shardshuffle=False).decode("pil")
    images = [
        pil_to_tensor(sample["png"].convert("RGB")) for sample in itertools.islice(dataset, num)
    ]
    return torch.stack(images)


@functools.cache
def first_real_clips(shards: Path, num: int) -> torch.Tensor:
    """The first `num` clips of the sorted shards, read by WebDataset and decoded by soundfile
    alone: float [N, 1, 16384] in [-1, 1]."""
    dataset = wds.WebDataset(expand_shards(str(shards)), shardshuffle=False)
    clips = []
    for sample in itertools.islice(dataset, num):
        samples, rate = soundfile.read(io.BytesIO(sample["flac"]), dtype="float32")
        assert rate == 16000 and samples.shape == (16384,)
        clips.append(torch.from_numpy(samples)[None])
    return torch.stack(clips)


def test_sharded_fid_kid_is_on_two_ranks_equal_torch_fidelity_calculate_metrics(
    tmp_path: Path,
    glyph_shards: Path,
    random_extractor: Path,
    tone_shards: Path,
    random_audio_extractor: Path,
) -> None:
    register_domain_extractor()  # what a user does before torch-fidelity's own calls
    num_fake, num_real = 101, 150  # odd: the ranks hold 51 and 50 samples
    out = tmp_path / "two_ranks.json"
    cache = tmp_path / "cache"
    run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(SCRIPT), str(glyph_shards), str(random_extractor), str(cache), str(out),
         str(num_fake), str(num_real), str(tone_shards), str(random_audio_extractor)],
        timeout=180,
    )  # fmt: skip
    report = json.loads(out.read_text())
    assert report["world"] == 2 and report["num_real"] == num_real
    assert report["first_hit"] is False and report["second_hit_per_rank"] == [True, True]
    # One image and one audio reference.
    assert len(list(cache.glob("reference-*.safetensors"))) == 2

    # torch-fidelity alone, in this one process, on the same generated and real samples, read
    # from PNG folders by its own loader: the fakes come from calling the generator and a plain
    # numpy conversion, the reals are the shards' PNG members as they lie in the tar files, so a
    # wrong [-1, 1] -> uint8 conversion or real-image decoding in gandist cannot match.
    cfg = eval_config(str(random_extractor), str(cache), num_fake, num_real)
    latents, _ = evaluation_latents(num_fake, 16, 0, cfg.seed)
    with torch.no_grad():
        raw = tiny_generator().eval()(latents).numpy()  # [N, 3, 32, 32] in about [-1, 1]
    fake_dir = write_pngs_by_hand(raw, tmp_path / "fakes")
    real_dir = copy_png_members(glyph_shards, num_real, tmp_path / "reals")
    assert_equal_to_torch_fidelity(report["results"], fake_dir, real_dir, random_extractor, cfg)

    # Audio: generated clips [B, 1, L] and the real tones, through the registered audio extractor.
    assert report["audio_num_real"] == num_real
    key = report["audio_cache_key"]
    assert (key["kind"], key["sample_rate"], key["length"]) == ("audio", 16000, 16384)
    assert "resolution" not in key
    with torch.no_grad():
        fake_clips = to_extractor_input(generate(tiny_audio_generator(), latents))
    assert fake_clips.shape == (num_fake, 1, 16384) and fake_clips.dtype == torch.float32
    real_clips = first_real_clips(tone_shards, num_real)
    assert_equal_to_torch_fidelity(
        report["audio_results"], fake_clips, real_clips, random_audio_extractor, cfg
    )


def write_pngs_by_hand(samples: np.ndarray, folder: Path) -> Path:
    """Float images [N, C, H, W] in [-1, 1] -> 8-bit PNGs named in order, by numpy and PIL alone."""
    folder.mkdir()
    pixels = np.clip(np.rint((samples.astype(np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    for index, image in enumerate(pixels):
        Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{index:06d}.png")
    return folder


def copy_png_members(shards: Path, num: int, folder: Path) -> Path:
    """The first `num` PNG members of the sorted .tar shards, copied byte for byte by tarfile."""
    folder.mkdir()
    index = 0
    for path in sorted(shards.glob("*.tar")):
        with tarfile.open(path) as archive:
            for member in archive.getmembers():
                if member.name.endswith(".png") and index < num:
                    data = archive.extractfile(member).read()
                    (folder / f"{index:06d}.png").write_bytes(data)
                    index += 1
    assert index == num
    return folder


def assert_equal_to_torch_fidelity(
    ours: dict,
    fakes: torch.Tensor | Path,
    reals: torch.Tensor | Path,
    weights: Path,
    cfg,
) -> None:
    """Our sharded results equal torch-fidelity's single-process calculate_metrics (1e-4 rel).

    Samples are tensors, or folders of images that torch-fidelity reads with its own loader."""
    from torch_fidelity import calculate_metrics

    def as_input(samples: torch.Tensor | Path) -> Samples | str:
        return str(samples) if isinstance(samples, Path) else Samples(samples)

    expected = calculate_metrics(
        input1=as_input(fakes), input2=as_input(reals),
        cuda=False, fid=True, kid=True, isc=True, verbose=False, cache=False, save_cpu_ram=True,
        feature_extractor=DOMAIN, feature_extractor_weights_path=str(weights),
        batch_size=cfg.batch_size, kid_subsets=cfg.kid_subsets,
        kid_subset_size=cfg.kid_subset_size, isc_splits=cfg.isc_splits,
    )  # fmt: skip
    num_fakes = len(list(fakes.iterdir())) if isinstance(fakes, Path) else len(fakes)
    assert ours["eval/num_samples"] == num_fakes
    assert ours["eval/fid"] == pytest.approx(expected["frechet_inception_distance"], rel=1e-4)
    assert ours["eval/kid"] == pytest.approx(expected["kernel_inception_distance_mean"], rel=1e-4)
    assert ours["eval/kid_std"] == pytest.approx(
        expected["kernel_inception_distance_std"], rel=1e-4
    )
    assert ours["eval/is"] == pytest.approx(expected["inception_score_mean"], rel=1e-4)
    assert ours["eval/fid"] > 0 and ours["eval/kid"] > 0


def halves_fids(
    samples: torch.Tensor, extractor: Path, noise_stds: list[float]
) -> tuple[list[float], float]:
    """FID between the even and the odd real samples, the odd ones degraded by Gaussian noise of
    each std (in units of the full range: pixels 0..255, or waveforms -1..1); and FID against
    pure noise. Samples are uint8 images [N, 3, H, W] or float clips [N, 1, L]."""
    from gandist.metrics.extractors import create_extractor, metric_layers

    audio = samples.is_floating_point()
    layers = metric_layers(DOMAIN)
    model = create_extractor(DOMAIN, list(layers.values()), str(extractor), torch.device("cpu"))
    ranks = Ranks(0, 1, torch.device("cpu"))
    real = sharded.extract(model, samples[0::2].split(32), ranks.device)
    reference = sharded.Reference(
        sharded.fid_features_to_statistics(real[layers["fid"]]), real[layers["kid"]], 128, {}
    )

    def fid(candidates: torch.Tensor) -> float:
        fake = sharded.extract(model, candidates.split(32), ranks.device)
        options = sharded.ScoreOptions(kid_subset_size=64)
        return sharded.score(fake, reference, layers, ranks, options)["eval/fid"]

    rng = torch.Generator().manual_seed(0)
    odd = samples[1::2].float()
    fids = []
    for std in noise_stds:
        if audio:
            fids.append(fid((odd + 2 * std * torch.randn(odd.shape, generator=rng)).clamp(-1, 1)))
        else:
            noisy = odd + std * 255 * torch.randn(odd.shape, generator=rng)
            fids.append(fid(noisy.round().clamp(0, 255).to(torch.uint8)))
    if audio:
        pure_noise = torch.rand(odd.shape, generator=rng) * 2 - 1
    else:
        pure_noise = torch.randint(0, 256, odd.shape, generator=rng, dtype=torch.uint8)
    return fids, fid(pure_noise)


def test_fid_between_real_halves_is_near_zero_and_grows_with_noise(
    glyph_shards: Path, trained_extractor: Path
) -> None:
    images = first_real_images(glyph_shards, 256)
    # Noise of 0.05 moves FID less than the sampling error of 128-image halves (measured: 18.06
    # clean, 17.96 at 0.05): the levels start where the extractor can resolve them.
    fids, noise_fid = halves_fids(images, trained_extractor, [0.0, 0.1, 0.2, 0.4])
    assert all(math.isfinite(f) for f in fids)
    assert fids == sorted(fids) and fids[-1] > 2 * fids[0], fids
    # Near 0 on the scale of a useless generator (128 samples a side leave a small bias).
    assert fids[0] < 0.1 * noise_fid, (fids, noise_fid)


def test_fid_between_real_tone_halves_is_small_and_grows_with_noise(
    tone_shards: Path, trained_audio_extractor: Path
) -> None:
    clips = first_real_clips(tone_shards, 256)
    fids, noise_fid = halves_fids(clips, trained_audio_extractor, [0.0, 0.01, 0.05, 0.2])
    assert all(math.isfinite(f) for f in fids)
    assert fids == sorted(fids) and fids[-1] > 2 * fids[0], fids
    assert fids[0] < 0.1 * noise_fid, (fids, noise_fid)


def test_reference_cache_is_reused_and_invalidated_by_changed_shards(
    tmp_path: Path, random_extractor: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shards = tmp_path / "shards"
    write_shards(glyph_samples(64, size=32, seed=5), shards, "glyphs", max_count=32)
    cfg = EvalConfig(
        extractor=DOMAIN, weights_path=str(random_extractor), num_real=48, batch_size=16,
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    data = DataConfig(shards=str(shards), resolution=32)
    first = Evaluator(cfg, data)
    first.prepare()
    assert first.cache_hit is False and first.reference.num == 48

    def no_recompute(*args, **kwargs):
        raise AssertionError("reference features recomputed despite a cached entry")

    with monkeypatch.context() as patch:
        patch.setattr(sharded, "real_features", no_recompute)
        patch.setattr("gandist.metrics.evaluate.real_features", no_recompute)
        second = Evaluator(cfg, data)
        second.prepare()
    assert second.cache_hit is True
    assert torch.equal(second.reference.kid_features, first.reference.kid_features)

    # New shard contents (same names): the cache key changes and the statistics are recomputed.
    write_shards(glyph_samples(64, size=32, seed=6), shards, "glyphs", max_count=32)
    third = Evaluator(cfg, data)
    third.prepare()
    assert third.cache_hit is False
    assert not torch.equal(third.reference.kid_features, first.reference.kid_features)
    assert len(list((tmp_path / "cache").glob("reference-*.safetensors"))) == 2


def test_eval_on_pipe_shards_scores_as_on_the_files_and_caches_by_command(
    tmp_path: Path, random_extractor: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shards = tmp_path / "shards"
    write_shards(glyph_samples(64, size=32, seed=5), shards, "glyphs", max_count=32)
    cfg = EvalConfig(
        extractor=DOMAIN, weights_path=str(random_extractor), num_samples=32, num_real=48,
        batch_size=16, kid_subset_size=16, kid_subsets=4, cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    files = DataConfig(shards=f"{shards}/glyphs-{{000000..000001}}.tar", resolution=32)
    # A secret in the command (an unused variable here) stays out of the cache description.
    piped = DataConfig(
        shards=f"pipe:API_TOKEN=s3cr3t cat {shards}/glyphs-{{000000..000001}}.tar", resolution=32
    )
    on_files = Evaluator(cfg, files).evaluate(tiny_generator())
    with caplog.at_level("INFO"):
        evaluator = Evaluator(cfg, piped)
        on_pipes = evaluator.evaluate(tiny_generator())
    assert evaluator.cache_hit is False  # a pipe command is not a file: its own key
    for key in ("eval/fid", "eval/kid", "eval/is"):
        assert on_pipes[key] == on_files[key], key
    path, description = evaluator.cache_path()
    assert path.is_file() and "s3cr3t" not in json.dumps(description) + caplog.text
    assert description["shards"][0] == [f"pipe:API_TOKEN=*** cat {shards}/glyphs-000000.tar"]
    again = Evaluator(cfg, piped)
    again.prepare()
    assert again.cache_hit is True


def test_http_shards_key_on_url_and_what_a_head_request_tells(tmp_path: Path) -> None:
    import http.server
    import threading

    from gandist.data.shards import shard_identities

    (tmp_path / "a.tar").write_bytes(b"x" * 1024)
    local = shard_identities([str(tmp_path / "a.tar")])
    assert shard_identities([(tmp_path / "a.tar").as_uri()]) == local  # file: URLs are files
    assert local[0][1] == 1024
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://user:pw@127.0.0.1:{server.server_port}/a.tar?token=t0k&v=1"
        first = shard_identities([url])[0]
        assert first[:2] == [url.replace(":pw@", ":***@").replace("t0k", "***"), 1024]
        (tmp_path / "a.tar").write_bytes(b"y" * 2048)
        assert shard_identities([url])[0][1] == 2048  # new contents, new key
        # No server: the URL alone, quickly.
        gone = f"http://127.0.0.1:{server.server_port}/missing.tar"
        assert shard_identities([gone], head_timeout_s=1.0) == [[gone]]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_training_evaluates_by_images_logs_keeps_best_and_gandist_eval_matches_on_1_and_2_ranks(
    tmp_path: Path, glyph_shards: Path, random_extractor: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(
        run_dir, glyph_shards,
        **{
            # 8 images a step: the count crosses 14 at step 2 and 28 at step 4 (also the last).
            "tracking.wandb": False, "eval.every_images": 14, "eval.num_samples": 48,
            "eval.num_real": 64,
            "eval.batch_size": 16, "eval.extractor": DOMAIN, "eval.weights_path": random_extractor,
            "eval.cache_dir": tmp_path / "cache", "eval.kid_subset_size": 32,
            "eval.kid_subsets": 10, "eval.max_share": 1.0,
        },
    )  # fmt: skip
    config = _write_empty_config(tmp_path)
    run(
        [sys.executable, "-m", "gandist.cli", "train", str(config), "--num-processes", "2",
         *overrides],
        timeout=240,
    )  # fmt: skip
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/fid" in r]
    assert [r["step"] for r in evals] == [2, 4]
    for row in evals:
        for key in ("eval/fid", "eval/kid", "eval/is", "perf/eval_s", "perf/eval_share"):
            assert math.isfinite(row[key]) and row[key] >= 0, (key, row)
        assert 0 < row["perf/eval_share"] < 1
    best_row = min(evals, key=lambda r: r["eval/fid"])
    best_path = rundir.best_checkpoint(run_dir)
    assert best_path is not None and best_path.name == f"step-{best_row['step']:08d}"
    best = json.loads((best_path / rundir.BEST).read_text())
    assert best["step"] == best_row["step"] and best["fid"] == best_row["eval/fid"]

    # The standalone command on 2 ranks and on 1 scores the same samples: the same numbers,
    # which are also the ones logged during training for that generator.
    two = run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "gandist.cli", "eval", str(run_dir), "--best", "--num-samples", "48"],
        timeout=180,
    )  # fmt: skip
    on_two = json.loads(two.stdout[two.stdout.index("{") :])
    assert cli.main(["eval", str(best_path), "--num", "48"]) == 0
    out = capsys.readouterr().out
    on_one = json.loads(out[out.index("{") :])
    assert on_two["eval/world_size"] == 2 and on_one["eval/world_size"] == 1
    assert on_one["eval/reference_cache_hit"] == 1
    for key in ("eval/fid", "eval/kid", "eval/is"):
        assert on_two[key] == pytest.approx(on_one[key], rel=1e-4)
        assert on_one[key] == pytest.approx(best_row[key], rel=1e-4)
    recorded = (best_path / "eval.jsonl").read_text().splitlines()
    assert len(recorded) == 2 and json.loads(recorded[0])["step"] == best_row["step"]


def test_missing_inception_weights_stop_training_before_it_starts(
    tmp_path: Path,
    glyph_shards: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # an empty hub: no weights
    with pytest.raises(ConfigError) as err:
        resolve_weights(INCEPTION, None)
    message = str(err.value)
    assert "curl -L -o weights-inception-2015-12-05-6726825d.pth https://" in message
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints") in message
    assert "eval.weights_path=" in message

    run_dir = tmp_path / "run"
    overrides = tiny_overrides(run_dir, glyph_shards, **{"eval.every": 2})
    code = cli.main(["train", str(_write_empty_config(tmp_path)), *overrides])
    assert code == 2
    assert "InceptionV3 weights" in capsys.readouterr().err
    assert not run_dir.exists()


def _write_empty_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text("{}\n")
    return path


def test_local_weights_path_is_used_and_a_bad_one_is_named(tmp_path: Path) -> None:
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"x")
    assert resolve_weights(INCEPTION, str(weights)) == str(weights)
    with pytest.raises(ConfigError, match="eval.weights_path='/nope.pth' is not a file"):
        resolve_weights(INCEPTION, "/nope.pth")


def test_eval_config_errors_name_the_key_and_the_choices() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown eval.extractor 'inceptoin'.*inception-v3-compat"
    ):
        load_config(None, ["eval.extractor=inceptoin"])
    with pytest.raises(ConfigError, match="gandist-domain needs eval.weights_path"):
        load_config(None, [f"eval.extractor={DOMAIN}"])
    with pytest.raises(ConfigError, match="eval.max_share must be in"):
        load_config(None, ["eval.max_share=0"])
    assert load_config(None, []).eval.every == 0  # evaluation is opt-in


def test_train_extractor_learns_the_glyph_classes_and_registers_with_torch_fidelity(
    glyph_shards: Path, trained_extractor: Path
) -> None:
    model, info = load_classifier(trained_extractor)
    assert info["num_classes"] == 10 and info["num_val"] == 26
    assert info["val_accuracy"] > 0.3  # 10 classes: chance is 0.1

    from torch_fidelity import calculate_metrics

    register_domain_extractor()
    images = first_real_images(glyph_shards, 64)
    metrics = calculate_metrics(
        input1=Samples(images), cuda=False, isc=True, verbose=False, cache=False,
        save_cpu_ram=True, feature_extractor=DOMAIN, feature_extractor_weights_path=str(trained_extractor),
        isc_splits=2,
    )  # fmt: skip
    assert metrics["inception_score_mean"] > 1.5  # confident, varied class predictions


def test_pacer_postpones_an_evaluation_that_would_exceed_its_share() -> None:
    ranks = Ranks(0, 1, torch.device("cpu"))
    pacer = EvalPacer(every=10, max_share=0.1, estimate_s=0.0)
    assert not pacer.due(9) and pacer.due(10)
    assert pacer.decide(10, ranks) and pacer.next_at == 20
    pacer.start -= 10.0  # 10 s of training so far ...
    pacer.record(5.0)  # ... and one evaluation that took 5 s: 50% > 10%
    assert not pacer.decide(20, ranks)
    assert pacer.next_at > 20
    pacer.start -= 1000.0
    assert pacer.decide(pacer.next_at, ranks)


@pytest.mark.parametrize("images_per_step", [48, 36, 100, 250])
def test_pacer_by_images_runs_once_each_time_the_count_crosses_a_multiple(
    images_per_step: int,
) -> None:
    ranks = Ranks(0, 1, torch.device("cpu"))
    pacer = EvalPacer(every=100, max_share=1.0, unit="images")
    ran_at = []
    for step in range(1, 41):
        images = step * images_per_step
        if pacer.due(images) and pacer.decide(images, ranks):
            ran_at.append(images)
    # The first count at or past each multiple of 100 reached (several at once if one batch
    # jumps more than one multiple), never an exact multiple only.
    expected = sorted({-(-m // images_per_step) * images_per_step
                       for m in range(100, 40 * images_per_step + 1, 100)})  # fmt: skip
    assert ran_at == expected, (ran_at, expected)
    if images_per_step == 48:
        assert ran_at[:4] == [144, 240, 336, 432]


def test_pacer_by_images_resumes_from_the_images_already_seen() -> None:
    pacer = EvalPacer(every=100, max_share=1.0, start_at=250, unit="images")
    assert not pacer.due(299) and pacer.due(336)


def test_eval_every_and_every_images_are_exclusive_and_either_turns_evaluation_on() -> None:
    with pytest.raises(ConfigError, match=r"eval.every=2 and eval.every_images=100 are both set"):
        load_config(None, ["eval.every=2", "eval.every_images=100"])
    with pytest.raises(ConfigError, match="eval.every_images must be >= 0"):
        load_config(None, ["eval.every_images=-1"])
    assert not load_config(None, []).eval.enabled
    assert load_config(None, ["eval.every_images=100"]).eval.enabled
    assert load_config(None, ["eval.every=5"]).eval.enabled


def test_train_extractor_learns_the_tone_classes_and_saves_an_audio_extractor(
    tone_shards: Path, trained_audio_extractor: Path
) -> None:
    payload = torch.load(trained_audio_extractor, weights_only=True)
    assert payload["kind"] == "audio"
    assert payload["hparams"]["sample_rate"] == 16000 and payload["hparams"]["length"] == 16384
    model, info = load_classifier(trained_audio_extractor)
    assert isinstance(model, AudioClassifier) and model.kind == "audio"
    assert info["kind"] == "audio" and info["num_classes"] == 8 and info["num_val"] == 26
    assert info["val_accuracy"] > 0.5, info  # 8 classes: chance is 0.125

    from torch_fidelity import calculate_metrics

    register_domain_extractor()
    metrics = calculate_metrics(
        input1=Samples(first_real_clips(tone_shards, 64)), cuda=False, isc=True, verbose=False,
        cache=False, save_cpu_ram=True, feature_extractor=DOMAIN,
        feature_extractor_weights_path=str(trained_audio_extractor), isc_splits=2,
    )  # fmt: skip
    assert metrics["inception_score_mean"] > 1.5


def test_an_extractor_of_the_wrong_kind_is_refused_naming_both(
    tmp_path: Path,
    tone_shards: Path,
    glyph_shards: Path,
    random_extractor: Path,
    random_audio_extractor: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    register_domain_extractor()
    from gandist.metrics.extractors import create_extractor

    audio = create_extractor(DOMAIN, ["features"], str(random_audio_extractor), torch.device("cpu"))
    with pytest.raises(ValueError, match=r"trained on audio .* got images uint8 \[2, 3, 32, 32\]"):
        audio(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    image = create_extractor(DOMAIN, ["features"], str(random_extractor), torch.device("cpu"))
    with pytest.raises(ValueError, match=r"trained on images .* got audio float32 \[2, 1, 4096\]"):
        image(torch.zeros(2, 1, 4096))

    cfg = EvalConfig(extractor=DOMAIN, weights_path=str(random_audio_extractor), num_real=8)
    with pytest.raises(ConfigError, match=r"is an audio extractor, but data.kind=image"):
        Evaluator(cfg, DataConfig(shards=str(glyph_shards)))
    with pytest.raises(
        ConfigError, match=r"trained on audio at 16000 Hz, but data.sample_rate=8000"
    ):
        Evaluator(cfg, DataConfig(shards=str(tone_shards), kind="audio", sample_rate=8000))
    image_cfg = EvalConfig(extractor=DOMAIN, weights_path=str(random_extractor), num_real=8)
    with pytest.raises(ConfigError, match=r"is an image extractor, but data.kind=audio"):
        Evaluator(image_cfg, DataConfig(shards=str(tone_shards), kind="audio"))
    with pytest.raises(ConfigError, match=r"eval.extractor=inception-v3-compat scores images, but "
                       r"data.kind=audio"):  # fmt: skip
        check_extractor_kind(INCEPTION, None, DataConfig(shards=str(tone_shards), kind="audio"))

    # Forcing the wrong kind when training names it and what it found instead.
    code = cli.main(["metrics", "train-extractor", str(tone_shards), "--out",
                     str(tmp_path / "x.pt"), "--kind", "image", "--quiet"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "no labelled image samples" in err and "no image member" in err and "flac" in err
    assert not (tmp_path / "x.pt").exists()


def test_audio_reference_cache_key_follows_sample_rate_and_length(tone_shards: Path) -> None:
    def key(fmt: SampleFormat) -> str:
        return sharded.reference_key(
            str(tone_shards), extractor=DOMAIN, weights_digest="x", layers={"fid": "features"},
            fmt=fmt, num=64,
        )[0]  # fmt: skip

    audio = SampleFormat(kind="audio", sample_rate=16000, length=16384)
    assert key(audio) == key(SampleFormat(kind="audio", sample_rate=16000, length=16384))
    assert key(audio) != key(SampleFormat(kind="audio", sample_rate=16000, length=8192))
    assert key(audio) != key(SampleFormat(kind="audio", sample_rate=22050, length=16384))
    # An audio key ignores image settings (and the reverse).
    assert key(audio) == key(SampleFormat(kind="audio", resolution=64, length=16384))
    assert key(SampleFormat()) != key(SampleFormat(resolution=64))
    assert key(SampleFormat()) == key(SampleFormat(length=8192))
