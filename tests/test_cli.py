"""The command line a user and Meltano see: --about documents every setting."""

from __future__ import annotations

import json
import subprocess

from conftest import TARGET_CMD, target_env

from target_graphitenote.target import TargetGraphiteNote


def about(fmt: str) -> str:
    run = subprocess.run([*TARGET_CMD, "--about", f"--format={fmt}"], capture_output=True,
                         text=True, env=target_env(), timeout=60, check=True)
    return run.stdout


def test_about_markdown_documents_every_setting() -> None:
    markdown = about("markdown")
    for name, spec in TargetGraphiteNote.config_jsonschema["properties"].items():
        row = next((line for line in markdown.splitlines() if line.startswith(f"| {name} |")),
                   None)
        assert row is not None, name
        assert spec.get("description"), f"{name} has no description"
        assert spec["description"].split(".")[0][:40] in row, name


def test_about_json_marks_the_token_secret() -> None:
    settings = json.loads(about("json"))["settings"]["properties"]
    assert settings["api_token"]["secret"] is True
    assert settings["api_url"]["default"] == "https://app.graphite-note.com/api"
    assert settings["load_method"]["enum"] == ["append-only", "overwrite"]


def test_about_says_python_3_11_or_newer() -> None:
    """fromisoformat is used with Python 3.11's rules (Z, any offset): 3.10 is not supported."""
    versions = json.loads(about("json"))["supported_python_versions"]
    assert versions[0] == "3.11"
    assert "3.10" not in versions
