"""The README's promises: the config reference it links matches the dataclasses, its commands exist."""

from __future__ import annotations

import re

from gandist.training.config import config_reference
from tests.conftest import ROOT


def test_config_reference_is_generated_from_the_dataclasses_and_linked() -> None:
    reference = (ROOT / "docs" / "config.md").read_text()
    block = re.search(
        r"<!-- config-reference:start -->\n(.*)<!-- config-reference:end -->", reference, re.S
    )
    assert block, "docs/config.md lost its config-reference markers"
    assert block.group(1) == config_reference(), (
        "docs/config.md is stale: paste the output of `gandist config --reference`"
    )
    assert "(docs/config.md)" in (ROOT / "README.md").read_text()


def test_readme_shows_the_two_commands_and_they_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    for script in ("launch/demo.sh", "launch/test.sh"):
        assert f"bash {script}" in readme
        assert (ROOT / script).is_file()
    assert "bash launch/test.sh" in (ROOT / ".ci" / "run").read_text()
