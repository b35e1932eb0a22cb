"""The config loader's messages, whole: what a user reads for each kind of mistake."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gandist.errors import ConfigError
from gandist.training.config import Config, TrainConfig, load_config

TOP = ", ".join(f.name for f in dataclasses.fields(Config))
TRAIN = ", ".join(f.name for f in dataclasses.fields(TrainConfig))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("zzz=1", f"unknown config key 'zzz'; accepted at the top level: {TOP}"),
        ("trian=1", f"unknown config key 'trian' (did you mean train?); accepted at the top level: {TOP}"),
        ("train.qqq=1", f"unknown config key 'train.qqq'; accepted in train: {TRAIN}"),
        ("train.stps=1", f"unknown config key 'train.stps' (did you mean train.steps?); accepted in train: {TRAIN}"),
        ("reg.zzz.q=1", "unknown config key 'reg.zzz'; accepted in reg: gp_weight, r1_gamma, r1_every, pl_weight, pl_every, ortho_weight, lecam_weight, lecam_decay, diversity_weight, weight_clip"),
        ("train.steps=abc", "bad value for 'train.steps': Value 'abc' of type 'str' could not be converted to Integer"),
        ("train.steps=", "bad value for 'train.steps': Incompatible value 'None' for field of type 'int'"),
        ("train.mixed_precision=yes", "bad value for 'train.mixed_precision': Invalid value 'True', expected one of ['auto', 'fp32', 'bf16', 'fp16'] (YAML reads yes/no/on/off as booleans: quote the value, or write fp32 for no)"),
        ("train.mixed_precision=no", "bad value for 'train.mixed_precision': Invalid value 'False', expected one of ['auto', 'fp32', 'bf16', 'fp16'] (YAML reads yes/no/on/off as booleans: quote the value, or write fp32 for no)"),
        ("train.mixed_precision=fp8", "bad value for 'train.mixed_precision': Invalid value 'fp8', expected one of ['auto', 'fp32', 'bf16', 'fp16']"),
        ("steps", "override 'steps' must look like key=value (e.g. train.steps=100)"),
    ],
)  # fmt: skip
def test_override_mistakes_give_the_whole_message(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, [override])
    assert str(caught.value) == message


def test_a_mistake_inside_a_yaml_file_names_the_key_and_the_file_mistakes_name_the_file(
    tmp_path: Path,
) -> None:
    config = tmp_path / "exp.yaml"
    config.write_text("train:\n  mixed_precision: no\n")
    with pytest.raises(ConfigError, match=r"^bad value for 'train.mixed_precision': .*'False'"):
        load_config(config)
    config.write_text("model:\n  nmae: x\n")
    with pytest.raises(
        ConfigError, match=r"^unknown config key 'model.nmae' \(did you mean model.name\?\)"
    ):
        load_config(config)
    config.write_text("train: [1\n")
    with pytest.raises(ConfigError, match=rf"^cannot parse {config}: while parsing"):
        load_config(config)
    with pytest.raises(ConfigError, match=rf"^config file not found: {tmp_path / 'missing.yaml'}$"):
        load_config(tmp_path / "missing.yaml")


def test_run_name_comes_from_the_file_then_gandist_unless_a_name_or_folder_is_given(
    tmp_path: Path,
) -> None:
    config = tmp_path / "faces.yaml"
    config.write_text("train:\n  steps: 3\n")
    assert load_config(config).run_name == "faces"
    assert load_config(None).run_name == "gandist"
    assert load_config(config, ["run_name=mine"]).run_name == "mine"
    assert load_config(config, ["output_dir=x/elsewhere"]).run_name == "elsewhere"
    # Later layers win: file over defaults, overrides over the file, in order.
    assert load_config(config, ["train.steps=4", "train.steps=5"]).train.steps == 5


def test_interpolation_mistakes_surface_at_the_end_as_one_line() -> None:
    """Interpolations resolve when the config is built, after merging: a wrong type names the
    key; a missing reference gives OmegaConf's own first line (it names no key)."""
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["run_name=abc", "train.steps=${run_name}"])
    assert str(caught.value) == (
        "bad value for 'train.steps': While dereferencing interpolation '${run_name}': "
        "Value 'abc' of type 'str' could not be converted to Integer"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["train.steps=${nowhere}"])
    assert str(caught.value) == "Interpolation key 'nowhere' not found"
    assert load_config(None, ["train.seed=7", "train.steps=${train.seed}"]).train.steps == 7


def test_a_malformed_override_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["train.steps=[1"])
    # yaml's message, its line breaks and indents joined into one line.
    assert str(caught.value) == (
        "cannot parse overrides ['train.steps=[1']: while parsing a flow sequence in "
        "\"<unicode string>\", line 1, column 1 did not find expected ',' or ']' in "
        '"<unicode string>", line 2, column 1'
    )


def test_a_section_given_a_scalar_names_the_section() -> None:
    with pytest.raises(ConfigError, match=r"^bad value for 'data'"):
        load_config(None, ["data=3"])


def test_an_empty_key_is_named() -> None:
    for item in ("=3", "train..steps=1", "=x=1"):  # the key ends at the first "="
        with pytest.raises(ConfigError, match="has an empty key"):
            load_config(None, [item])


def test_a_config_file_that_holds_a_list_or_a_scalar_is_one_line(tmp_path: Path) -> None:
    listed, scalar = tmp_path / "listed.yaml", tmp_path / "scalar.yaml"
    listed.write_text("- train\n- steps: 3\n")
    scalar.write_text("3\n")
    with pytest.raises(ConfigError) as caught:
        load_config(listed)
    assert str(caught.value) == (
        f"{listed} holds a list; a config file maps sections to keys (e.g. `train:` and an "
        "indented `steps: 100` below it)"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(scalar)
    assert str(caught.value) == f"cannot read {scalar}: Invalid loaded object type: int"


@dataclasses.dataclass
class _Inner:
    rate: float = 0.5
    """A rate,
    over two lines."""
    undocumented: int = 3


@dataclasses.dataclass
class _Root:
    name: str | None = None
    """The name."""
    inner: _Inner = dataclasses.field(default_factory=_Inner)


def test_the_reference_table_has_one_row_per_field_with_its_default_and_docstring() -> None:
    from gandist.config import reference_markdown

    assert reference_markdown(_Root()).splitlines() == [
        "| key | default | meaning |",
        "| --- | --- | --- |",
        "| `name` | `null` | The name. |",
        "| `inner.rate` | `0.5` | A rate, over two lines. |",
        "| `inner.undocumented` | `3` |  |",
    ]
