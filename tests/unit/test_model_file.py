"""model.json: engine arguments for vLLM, and the keys this backend keeps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embeds_backend.settings import load_model_file

TEMPLATE = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"


def write(folder: Path, **keys) -> Path:
    path = folder / "model.json"
    path.write_text(json.dumps({"model": "some/hub-id", **keys}))
    return path


def test_chat_template_is_not_an_engine_argument(tmp_path: Path) -> None:
    model_file = load_model_file(write(tmp_path, chat_template=TEMPLATE, max_model_len=64), tmp_path)
    assert model_file.chat_template == TEMPLATE
    assert "chat_template" not in model_file.engine_args
    assert model_file.engine_args["max_model_len"] == 64


def test_chat_template_may_be_a_file_beside_model_json_or_in_the_project(tmp_path: Path) -> None:
    (tmp_path / "beside.jinja").write_text(TEMPLATE)
    assert (
        load_model_file(write(tmp_path, chat_template="beside.jinja"), tmp_path / "x").chat_template
        == TEMPLATE
    )
    project, model_dir = tmp_path / "project", tmp_path / "project" / "repo" / "m" / "1"
    model_dir.mkdir(parents=True)
    (project / "templates").mkdir()
    (project / "templates" / "chat.jinja").write_text(TEMPLATE + "!")
    found = load_model_file(write(model_dir, chat_template="templates/chat.jinja"), project).chat_template
    assert found == TEMPLATE + "!"


def test_without_chat_template_the_tokenizers_applies(tmp_path: Path) -> None:
    assert load_model_file(write(tmp_path), tmp_path).chat_template is None


@pytest.mark.parametrize("value", ["", 3, ["x"]])
def test_a_chat_template_that_is_no_text_fails_the_load(tmp_path: Path, value: object) -> None:
    with pytest.raises(ValueError, match="chat_template must be Jinja text or a file path"):
        load_model_file(write(tmp_path, chat_template=value), tmp_path)


def test_a_one_line_template_is_text_and_a_missing_file_fails_the_load(tmp_path: Path) -> None:
    long_inline = "{{ messages[0]['content'] }}" + " " * 400
    assert load_model_file(write(tmp_path, chat_template=long_inline), tmp_path).chat_template == long_inline
    with pytest.raises(ValueError, match=r"chat_template file 'templates/missing\.jinja' not found"):
        load_model_file(write(tmp_path, chat_template="templates/missing.jinja"), tmp_path)
