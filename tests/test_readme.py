"""The README's promises: its config reference matches the dataclasses, its commands exist."""

from __future__ import annotations

import re

from gandist.training.config import config_reference
from tests.conftest import ROOT


def test_readme_config_reference_is_generated_from_the_dataclasses() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(
        r"<!-- config-reference:start -->\n(.*)<!-- config-reference:end -->", readme, re.S
    )
    assert block, "README.md lost its config-reference markers"
    assert block.group(1) == config_reference(), (
        "README config reference is stale: paste the output of `gandist config --reference`"
    )


def test_readme_shows_the_two_commands_and_they_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    for script in ("launch/demo.sh", "launch/test.sh"):
        assert f"bash {script}" in readme
        assert (ROOT / script).is_file()
    assert "bash launch/test.sh" in (ROOT / ".ci" / "run").read_text()
