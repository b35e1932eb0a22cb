"""Each config section's own range checks and the cross-section name checks, message by message.

Every bound is tried on both sides: the first value past it fails with the whole message a user
reads, and the bound itself loads. The mutation run (`launch/mutation.sh *-config`) scores these.
"""

from __future__ import annotations

import pytest

from gandist.errors import ConfigError
from gandist.metrics.config import EvalConfig
from gandist.training.config import (
    Config,
    a_family,
    config_warnings,
    families_of_kind,
    family_kind,
    load_config,
)

AUDIO = ["data.kind=audio", "model.name=wavegan"]


def message(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(None, overrides)
    return str(caught.value)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        # data
        ("data.resolution=3", "data.resolution must be >= 4, got 3"),
        ("data.channels=2", "data.channels must be 1 or 3, got 2"),
        ("data.num_workers=-1", "data.num_workers must be >= 0, got -1"),
        ("data.shuffle_buffer=-1", "data.shuffle_buffer must be >= 0, got -1"),
        ("data.epoch_batches=0", "data.epoch_batches must be >= 1, got 0"),
        ("data.sample_rate=0", "data.sample_rate must be >= 1 Hz, got 0"),
        ("data.length=15", "data.length must be >= 16 samples, got 15"),
        ("data.max_bad_fraction=-0.01", "data.max_bad_fraction must be in [0, 1], got -0.01"),
        ("data.max_bad_fraction=1.01", "data.max_bad_fraction must be in [0, 1], got 1.01"),
        ("data.max_member_bytes=0", "data.max_member_bytes must be >= 1, got 0"),
        ("data.max_image_pixels=0", "data.max_image_pixels must be >= 1, got 0"),
        ("data.timeout_s=0", "data.timeout_s must be > 0 seconds, got 0.0"),
        ("data.read_timeout_s=0", "data.read_timeout_s must be > 0 seconds, got 0.0"),
        ("data.read_retries=-1", "data.read_retries must be >= 0, got -1"),
        ("data.read_timeout_s=inf", "data.read_timeout_s=inf must be a finite number"),
        # model
        ("model.phase_shuffle=-1", "model.phase_shuffle must be >= 0, got -1"),
        ("model.latent_dim=0", "model.latent_dim must be >= 1, got 0"),
        ("model.g_width=0", "model.g_width must be >= 1, got 0"),
        ("model.d_width=0", "model.d_width must be >= 1, got 0"),
        ("model.num_classes=-1", "model.num_classes must be >= 0, got -1"),
        ("model.mapping_layers=0", "model.mapping_layers must be >= 1, got 0"),
        ("model.res_blocks=0", "model.res_blocks must be >= 1, got 0"),
        ("model.style_mixing_prob=-0.1", "model.style_mixing_prob must be in [0, 1], got -0.1"),
        ("model.style_mixing_prob=1.1", "model.style_mixing_prob must be in [0, 1], got 1.1"),
        ("model.style_mixing_prob=nan", "model.style_mixing_prob=nan must be a finite number"),
        # eval
        ("eval.every=-1", "eval.every must be >= 0 (0 = off), got -1"),
        ("eval.every_images=-1", "eval.every_images must be >= 0 (0 = off), got -1"),
        ("eval.num_samples=1", "eval.num_samples must be >= 2 (FID and KID compare sets), got 1"),
        ("eval.num_real=1", "eval.num_real must be >= 2 (FID and KID compare sets), got 1"),
        ("eval.seed=-1", "eval.seed must be >= 0, got -1"),
        ("eval.batch_size=0", "eval.batch_size must be >= 1, got 0"),
        ("eval.kid_subsets=0", "eval.kid_subsets must be >= 1, got 0"),
        ("eval.kid_subset_size=0", "eval.kid_subset_size must be >= 1, got 0"),
        ("eval.prc_neighborhood=0", "eval.prc_neighborhood must be >= 1, got 0"),
        ("eval.isc_splits=0", "eval.isc_splits must be >= 1, got 0"),
        ("eval.truncation=-0.1", "eval.truncation must be in [0, 1] (1: off, 0.7 is usual), got -0.1"),
        ("eval.truncation=1.1", "eval.truncation must be in [0, 1] (1: off, 0.7 is usual), got 1.1"),
        ("eval.max_share=0", "eval.max_share must be in (0, 1], got 0.0"),
        ("eval.max_share=1.1", "eval.max_share must be in (0, 1], got 1.1"),
        ("eval.max_share=inf", "eval.max_share=inf must be a finite number"),
        # optim
        ("optim.g_lr=0", "optim.g_lr and optim.d_lr must be > 0"),
        ("optim.d_lr=0", "optim.g_lr and optim.d_lr must be > 0"),
        ("optim.betas=[0.5,1.0]", "optim.betas must be in [0, 1), got (0.5, 1.0)"),
        ("optim.betas=[-0.1,0.9]", "optim.betas must be in [0, 1), got (-0.1, 0.9)"),
        ("optim.warmup_steps=-1", "optim.warmup_steps must be >= 0, got -1"),
        ("optim.decay_after_steps=-1", "optim.decay_after_steps must be >= 0, got -1"),
        ("optim.grad_clip_norm=-1", "optim.grad_clip_norm must be >= 0, got -1.0"),
        # train
        ("train.steps=0", "train.steps must be >= 1, got 0"),
        ("train.batch_size=0", "train.batch_size must be >= 1, got 0"),
        ("train.log_every=0", "train.log_every must be >= 1, got 0"),
        ("train.sample_every=0", "train.sample_every must be >= 1, got 0"),
        ("train.checkpoint_every=0", "train.checkpoint_every must be >= 1, got 0"),
        ("train.progress_every_s=-1", "train.progress_every_s must be >= 0, got -1.0"),
        ("train.num_samples=0", "train.num_samples must be >= 1, got 0"),
        ("train.checkpoints_total_limit=0", "train.checkpoints_total_limit must be >= 1, got 0"),
        ("train.n_critic=0", "train.n_critic must be >= 1, got 0"),
        ("train.ema_half_life_images=-1", "train.ema_half_life_images must be >= 0, got -1"),
        ("train.ema_rampup=-0.1", "train.ema_rampup must be >= 0 (0.05 in StyleGAN2-ADA, 0: off), got -0.1"),
        ("train.ada_target=-0.1", "train.ada_target must be in [0, 1) (0.6 in the paper, 0: off), got -0.1"),
        ("train.ada_target=1", "train.ada_target must be in [0, 1) (0.6 in the paper, 0: off), got 1.0"),
        ("train.ada_interval=0", "train.ada_interval must be >= 1, got 0"),
        ("train.ada_ramp_images=0", "train.ada_ramp_images must be >= 1, got 0"),
        ("train.max_bad_steps=0", "train.max_bad_steps must be >= 1, got 0"),
        ("train.stop_check_every=0", "train.stop_check_every must be >= 1, got 0"),
        ("train.seed=-1", "train.seed must be in [0, 2**63), got -1"),
        ("train.seed=9223372036854775808", "train.seed must be in [0, 2**63), got 9223372036854775808"),
        ("train.dist_timeout_s=0", "train.dist_timeout_s must be > 0 seconds, got 0.0"),
        ("train.progress_every_s=nan", "train.progress_every_s=nan must be a finite number"),
        # reg
        ("reg.lecam_decay=-0.1", "reg.lecam_decay must be in [0, 1), got -0.1"),
        ("reg.lecam_decay=1", "reg.lecam_decay must be in [0, 1), got 1.0"),
        ("reg.gp_weight=-1", "reg.gp_weight must be >= 0, got -1.0"),
        ("reg.r1_gamma=-1", "reg.r1_gamma must be >= 0, got -1.0"),
        ("reg.pl_weight=-1", "reg.pl_weight must be >= 0, got -1.0"),
        ("reg.ortho_weight=-1", "reg.ortho_weight must be >= 0, got -1.0"),
        ("reg.weight_clip=-1", "reg.weight_clip must be >= 0, got -1.0"),
        ("reg.lecam_weight=-1", "reg.lecam_weight must be >= 0, got -1.0"),
        ("reg.diversity_weight=-1", "reg.diversity_weight must be >= 0, got -1.0"),
        ("reg.r1_every=0", "reg.r1_every must be >= 1, got 0"),
        ("reg.pl_every=0", "reg.pl_every must be >= 1, got 0"),
        ("reg.lecam_decay=nan", "reg.lecam_decay=nan must be a finite number"),
        # cycle
        ("cycle.cycle_weight=-1", "cycle.cycle_weight must be >= 0, got -1.0"),
        ("cycle.identity_weight=-1", "cycle.identity_weight must be >= 0, got -1.0"),
        ("cycle.pool_size=-1", "cycle.pool_size must be >= 0, got -1"),
    ],
)  # fmt: skip
def test_a_value_just_past_each_bound_gives_its_whole_message(override: str, expected: str) -> None:
    assert message([override]) == expected


def test_every_bound_itself_loads() -> None:
    lowest = [
        *("data.num_workers=0", "data.shuffle_buffer=0", "data.epoch_batches=1"),
        *("data.sample_rate=1", "data.length=16"),
        *("data.max_bad_fraction=0", "data.max_member_bytes=1", "data.max_image_pixels=1"),
        *("data.timeout_s=0.001", "data.read_timeout_s=0.001", "data.read_retries=0"),
        *("model.phase_shuffle=0", "model.latent_dim=1", "model.g_width=1", "model.d_width=1"),
        *("model.mapping_layers=1", "model.res_blocks=1", "model.style_mixing_prob=0"),
        *("eval.every_images=0", "eval.num_samples=2", "eval.num_real=2", "eval.seed=0"),
        *("eval.batch_size=1", "eval.kid_subsets=1", "eval.kid_subset_size=1"),
        *("eval.prc_neighborhood=1", "eval.isc_splits=1", "eval.truncation=0"),
        *("eval.max_share=0.001", "optim.g_lr=1e-9", "optim.d_lr=1e-9", "optim.betas=[0,0]"),
        *("optim.warmup_steps=0", "optim.decay_after_steps=0", "optim.grad_clip_norm=0"),
        *("train.steps=1", "train.batch_size=1", "train.log_every=1", "train.sample_every=1"),
        *("train.checkpoint_every=1", "train.progress_every_s=0", "train.num_samples=1"),
        *("train.checkpoints_total_limit=1", "train.n_critic=1", "train.ema_half_life_images=0"),
        *("train.ada_target=0", "train.ada_interval=1", "train.ada_ramp_images=1"),
        *("train.max_bad_steps=1", "train.stop_check_every=1", "train.seed=0"),
        *("train.dist_timeout_s=0.001", "reg.lecam_decay=0", "reg.r1_every=1", "reg.pl_every=1"),
        *("reg.gp_weight=0", "reg.r1_gamma=0", "reg.pl_weight=0", "reg.ortho_weight=0"),
        *("reg.weight_clip=0", "reg.lecam_weight=0", "reg.diversity_weight=0"),
        *("cycle.cycle_weight=0", "cycle.identity_weight=0", "cycle.pool_size=0"),
    ]
    cfg = load_config(None, ["model.name=mlp", "data.resolution=4", "data.channels=1", *lowest])
    assert (cfg.data.resolution, cfg.data.channels, cfg.data.length) == (4, 1, 16)
    highest = [
        *("data.max_bad_fraction=1", "model.style_mixing_prob=1", "eval.truncation=1"),
        *("eval.max_share=1", "optim.betas=[0.999,0.999]", "train.ada_target=0.999"),
        *("reg.lecam_decay=0.999", "train.seed=9223372036854775807", "model.num_classes=0"),
    ]
    cfg = load_config(None, highest)
    assert (cfg.eval.max_share, cfg.train.seed, cfg.data.channels) == (1.0, 2**63 - 1, 3)
    assert load_config(None, ["eval.every=1"]).eval.every == 1


def test_eval_is_enabled_by_steps_or_by_images_and_never_by_both() -> None:
    assert not EvalConfig().enabled
    assert EvalConfig(every=1).enabled and EvalConfig(every_images=1).enabled
    assert load_config(None, ["eval.every=1", "eval.every_images=0"]).eval.enabled
    assert message(["eval.every=1", "eval.every_images=1"]) == (
        "eval.every=1 and eval.every_images=1 are both set; "
        "evaluate by steps or by images: set the other one to 0"
    )


def test_run_name_and_output_dir_fill_each_other_and_one_is_needed() -> None:
    with pytest.raises(ConfigError) as caught:
        Config()
    assert str(caught.value) == "run_name or output_dir must be set"
    assert Config(run_name="a").output_dir.replace("\\", "/") == "runs/a"
    named = Config(run_name="a", output_dir="x/b")
    assert (named.run_name, named.output_dir) == ("a", "x/b")


IMAGE_FAMILIES = "biggan, conditional, dcgan, mlp, sngan, stylegan2, wgan, wgan-gp"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["train.algorithm=gan"], "unknown algorithm 'gan' for train.algorithm; choose from [adversarial, cyclegan]"),
        (["train.loss=hinj"], "unknown loss 'hinj' for train.loss; choose from ["),
        (["train.augment=translation,blur"], "unknown augmentation 'blur' in train.augment='translation,blur'; use a comma list of"),
        ([*AUDIO, "train.ada_target=0.6"], "train.ada_target=0.6 augments images but data.kind=audio: set train.ada_target=0 for audio"),
        (["eval.extractor=vgg"], "unknown eval.extractor 'vgg'; choose from ["),
        (["model.name=cyclegan"], "model.name=cyclegan and train.algorithm=adversarial do not fit: train.algorithm=cyclegan trains model.name=cyclegan (image-to-image translators) and every other family trains with train.algorithm=adversarial"),
        (["train.algorithm=cyclegan", "data.shards_b=b"], "model.name=dcgan and train.algorithm=cyclegan do not fit: "),
        (["train.algorithm=cyclegan", "model.name=cyclegan"], "train.algorithm=cyclegan translates between two unpaired sets: data.shards holds domain A, and data.shards_b must name the shards of domain B (e.g. data.shards_b=data/glyphs-b)"),
        (["data.shards_b=b"], "data.shards_b=b is domain B of unpaired translation, which only train.algorithm=cyclegan reads (this config trains adversarial): remove data.shards_b, or join sets into data.shards with `::`"),
        (["train.algorithm=cyclegan", "model.name=cyclegan", "data.shards_b=b", "data.kind=audio"], "train.algorithm=cyclegan translates images; got data.kind=audio"),
        (["model.num_classes=3"], "model.num_classes=3 but model.name=dcgan is unconditional (it ignores labels): set model.num_classes=0, or choose a class-conditional family (conditional, biggan)"),
        (["data.resolution=12"], "model.name=dcgan needs data.resolution to be a power of two >= 8, got 12"),
        (["model.name=wavegan"], "model.name=wavegan generates audio but data.kind=image: choose an image family (" + IMAGE_FAMILIES + ") or set data.kind=audio with audio shards"),
        (["data.kind=audio"], "model.name=dcgan generates images but data.kind=audio: choose an audio family (conditional-wavegan, wavegan) or set data.kind=image with image shards"),
        ([*AUDIO, "train.augment=color"], "train.augment='color' is DiffAugment for images and cannot apply to data.kind=audio: leave it empty; audio D's augmentation is model.phase_shuffle, and reg.gp_weight, reg.r1_gamma, reg.weight_clip and reg.ortho_weight work on audio"),
        ([*AUDIO, "reg.pl_weight=1"], "reg.pl_weight=1.0 is StyleGAN2's image path-length penalty and cannot apply to data.kind=audio: set it to 0; reg.gp_weight, reg.r1_gamma, reg.weight_clip and reg.ortho_weight work on audio"),
        ([*AUDIO, "data.length=65536"], "model.audio_length=16384 but data.length=65536: the model generates clips as long as the ones it trains on; set both to the same"),
    ],
)  # fmt: skip
def test_names_and_facts_across_sections_give_their_whole_message(
    overrides: list[str], expected: str
) -> None:
    got = message(overrides)
    assert got == expected if not expected.endswith(("[", ": ", "of")) else got.startswith(expected)


def test_settings_that_fit_across_sections_load() -> None:
    cyclegan = ["train.algorithm=cyclegan", "model.name=cyclegan", "data.shards_b=b"]
    assert load_config(None, cyclegan).data.shards_b == "b"
    assert (
        load_config(None, ["model.name=conditional", "model.num_classes=3"]).model.num_classes == 3
    )
    assert load_config(None, [*AUDIO, "train.augment="]).train.augment is None
    assert load_config(None, ["train.augment=translation,cutout,color"]).train.augment
    assert load_config(None, ["train.ada_target=0.6"]).train.ada_target == 0.6
    assert load_config(None, [*AUDIO, "train.ada_target=0"]).data.kind == "audio"
    domain = ["eval.extractor=gandist-domain", "eval.weights_path=digits.pt"]
    assert load_config(None, domain).eval.weights_path == "digits.pt"
    assert message(domain[:1]).startswith("eval.extractor=gandist-domain needs eval.weights_path=")
    conditional_audio = ["data.kind=audio", "model.name=conditional-wavegan", "model.num_classes=2"]
    assert load_config(None, conditional_audio).model.num_classes == 2


def test_families_are_listed_by_the_kind_they_generate() -> None:
    assert (family_kind("dcgan"), family_kind("wavegan"), family_kind("cyclegan")) == (
        "image",
        "audio",
        "image",
    )
    assert ", ".join(families_of_kind("image")) == IMAGE_FAMILIES  # cyclegan translates
    assert families_of_kind("audio") == ["conditional-wavegan", "wavegan"]
    assert a_family("audio") == "an audio family (conditional-wavegan, wavegan)"
    assert a_family("image") == f"an image family ({IMAGE_FAMILIES})"
    assert a_family("video") == "a video family ()"


def test_only_wasserstein_without_a_lipschitz_constraint_warns() -> None:
    (warning,) = config_warnings(load_config(None, ["train.loss=wasserstein"]))
    assert warning == (
        "train.loss=wasserstein without a Lipschitz constraint on D: set reg.gp_weight "
        "(WGAN-GP, 10) or reg.weight_clip (WGAN, 0.01); otherwise the critic's outputs grow "
        "without bound"
    )
    for cure in ("reg.gp_weight=1", "reg.weight_clip=0.01"):  # 1: the bound is > 0, not > 1
        assert config_warnings(load_config(None, ["train.loss=wasserstein", cure])) == []
    assert config_warnings(load_config(None, ["train.loss=hinge"])) == []
