"""The README documents every setting the server reads."""

from pathlib import Path

from rustchat.config import FIELDS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    missing = [f.env for f in FIELDS if f"`{f.env}`" not in README]
    assert missing == []


def test_readme_starts_with_the_two_commands() -> None:
    block = README.split("```")[1]
    assert "./scripts/run" in block and "./scripts/test" in block
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "scripts/test" in ci
