"""The README stays true: its two commands exist and its settings table matches the code."""

from pathlib import Path

from core.settings import Settings

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_readme_opens_with_the_two_commands():
    block = README.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert [line.split("#")[0].strip() for line in block] == ["python3 dev.py demo", "python3 dev.py test"]


def test_every_setting_is_documented():
    for name in Settings.model_fields:
        assert f"`VITRINE_{name.upper()}`" in README, f"VITRINE_{name.upper()} missing from the README"
