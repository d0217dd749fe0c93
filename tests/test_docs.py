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


ROOT = Path(__file__).resolve().parents[1]


def test_every_event_the_server_sends_is_documented_and_handled_by_the_web_client() -> None:
    import re

    from rustchat.realtime import events

    api = (ROOT / "docs" / "api.md").read_text()
    web = ROOT / "app" / "rustchat" / "web" / "static" / "js"
    handled = set(re.findall(r'case "([a-z_]+)":', (web / "chat.js").read_text()))
    handled |= set(re.findall(r'msg\.event === "([a-z_]+)"', (web / "realtime.js").read_text()))
    assert sorted(n for n in events.EVENT_NAMES if f"`{n}`" not in api) == []
    assert sorted(events.EVENT_NAMES - handled) == []


def test_events_are_built_only_from_the_vocabulary() -> None:
    """A literal event name outside realtime/events.py would be a second place for it."""
    import re

    literal = re.compile(r'Event\(\s*"|"event":\s*"|_publish\([^,]+,\s*"')
    offenders = [str(path.relative_to(ROOT)) for path in (ROOT / "app" / "rustchat").rglob("*.py")
                 if path.name != "events.py" and literal.search(path.read_text())]
    assert offenders == []
