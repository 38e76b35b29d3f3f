"""The wire contract has one source (`embeds_backend.contract`): the shipped
config.pbtxt, the auto-complete and the client's `triton_embeds.protocol` must
all agree with it, name for name."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from embeds_backend import contract, triton_config
from embeds_backend.settings import BackendSettings, load_backend_settings
from tools.paths import SHIPPED_MODEL
from triton_embeds import protocol

CONFIG = SHIPPED_MODEL / "config.pbtxt"


def read_config(path: Path = CONFIG) -> model_config_pb2.ModelConfig:
    """config.pbtxt parsed by Triton's own ModelConfig protobuf."""
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def declared(tensors: Any) -> list[tuple[str, str, tuple[int, ...], bool]]:
    return [
        (
            t.name,
            model_config_pb2.DataType.Name(t.data_type),
            tuple(t.dims),
            bool(getattr(t, "optional", False)),
        )
        for t in tensors
    ]


def specs(entries: tuple[contract.TensorSpec, ...]) -> list[tuple[str, str, tuple[int, ...], bool]]:
    return [(s.name, s.data_type, s.dims, s.optional) for s in entries]


def test_config_pbtxt_declares_exactly_the_contract() -> None:
    config = read_config()
    assert declared(config.input) == specs(contract.INPUTS)
    assert declared(config.output) == specs(contract.OUTPUTS)
    assert config.model_transaction_policy.decoupled
    assert config.max_batch_size == 0


def test_a_renamed_input_in_config_pbtxt_fails_the_check(tmp_path: Path) -> None:
    """The check above is not vacuous: one changed name breaks it."""
    edited = tmp_path / "config.pbtxt"
    edited.write_text(CONFIG.read_text().replace('name: "prompt_embeds_fp16"', 'name: "prompt_embeds_half"'))
    assert declared(read_config(edited).input) != specs(contract.INPUTS)


def test_config_pbtxt_parameters_are_the_backend_settings() -> None:
    parameters = json_format.MessageToDict(read_config(), preserving_proto_field_name=True)["parameters"]
    settings = load_backend_settings({"parameters": parameters})
    assert settings == BackendSettings()  # the shipped values are the defaults
    knobs = {field.name for field in fields(BackendSettings)} - {"cancel_poll_interval_s"}
    assert set(parameters) == knobs


class AutoCompleteConfig:
    """The parts of python_backend's auto-complete config object the model uses."""

    def __init__(self, inputs: list[dict[str, Any]] | None = None) -> None:
        self.config: dict[str, Any] = {"input": list(inputs or []), "output": []}

    def set_max_batch_size(self, size: int) -> None:
        self.config["max_batch_size"] = size

    def set_model_transaction_policy(self, policy: dict[str, bool]) -> None:
        self.config["model_transaction_policy"] = policy

    def as_dict(self) -> dict[str, Any]:
        return self.config

    def add_input(self, entry: dict[str, Any]) -> None:
        self.config["input"].append(entry)

    def add_output(self, entry: dict[str, Any]) -> None:
        self.config["output"].append(entry)


def test_auto_complete_fills_a_minimal_config_with_the_contract() -> None:
    completed = triton_config.complete(AutoCompleteConfig()).as_dict()
    assert completed["input"] == [spec.as_config() for spec in contract.INPUTS]
    assert completed["output"] == [spec.as_config() for spec in contract.OUTPUTS]
    assert completed["model_transaction_policy"] == {"decoupled": True}
    assert completed["max_batch_size"] == 0


def test_auto_complete_keeps_what_the_config_states() -> None:
    stated = {"name": "text_input", "data_type": "TYPE_STRING", "dims": [1]}
    completed = triton_config.complete(AutoCompleteConfig([stated])).as_dict()
    assert completed["input"].count(stated) == 1
    assert [entry["name"] for entry in completed["input"]] == [spec.name for spec in contract.INPUTS]


@pytest.mark.parametrize(
    "name",
    [
        "TEXT_INPUT",
        "EMBEDS_FP32_INPUT",
        "EMBEDS_FP16_INPUT",
        "EMBEDS_BF16_INPUT",
        "EMBEDS_BASE64_INPUT",
        "STREAM_INPUT",
        "SAMPLING_INPUT",
        "EXCLUDE_INPUT",
        "MESSAGES_INPUT",
        "CHAT_PARAMETERS_INPUT",
        "CHAT_ROLES",
        "TEXT_PART",
        "EMBEDS_PART",
        "EMBEDS_PART_DATA",
        "EMBEDS_PART_ROWS",
        "EMBEDS_PLACEHOLDER",
        "RETURN_FINISH_REASON_INPUT",
        "RETURN_CUMULATIVE_LOGPROB_INPUT",
        "RETURN_LOGPROBS_INPUT",
        "RETURN_NUM_INPUT_TOKENS_INPUT",
        "RETURN_NUM_OUTPUT_TOKENS_INPUT",
        "LOGPROBS_OUTPUT",
        "CUMULATIVE_LOGPROB_OUTPUT",
        "TEXT_OUTPUT",
        "FINISH_REASON_OUTPUT",
        "INPUT_TOKENS_OUTPUT",
        "OUTPUT_TOKENS_OUTPUT",
        "EMBEDS_INPUTS",
        "FINAL_OUTPUTS",
    ],
)
def test_client_protocol_names_match_the_server_contract(name: str) -> None:
    assert getattr(protocol, name) == getattr(contract, name)


def test_client_knows_each_raw_embeds_input_and_its_wire_datatype() -> None:
    server = {
        spec.name: spec.wire_datatype
        for spec in contract.INPUTS
        if spec.name in contract.EMBEDS_TENSOR_INPUTS
    }
    assert server == protocol.EMBEDS_TENSOR_DATATYPES


def test_error_kinds_match_and_the_marker_round_trips() -> None:
    assert {
        value for key, value in vars(contract.ErrorKind).items() if not key.startswith("_")
    } == protocol.ERROR_KINDS
    for kind, code in [
        *[(contract.ErrorKind.REJECTED, rule) for rule in contract.RULES],
        *[(contract.ErrorKind.UNAVAILABLE, code) for code in contract.UNAVAILABLE_CODES],
        (contract.ErrorKind.INTERNAL, contract.GENERATION_FAILED),
    ]:
        message = contract.error_message(kind, code, "prose that may change [x:y] ")
        assert protocol.parse_error_marker(message) == protocol.ErrorMarker(kind, code)


def public(namespace: type) -> dict[str, object]:
    return {key: value for key, value in vars(namespace).items() if not key.startswith("_")}


def test_client_knows_every_code_the_server_sends() -> None:
    assert public(protocol.Rule) == public(contract.Rule)
    assert public(protocol.Unavailable) == public(contract.Unavailable)
    assert protocol.GENERATION_FAILED == contract.GENERATION_FAILED


def test_messages_without_the_marker_at_the_start_are_not_the_models() -> None:
    assert protocol.parse_error_marker("Request for unknown model: 'x' is not found") is None
    assert protocol.parse_error_marker("[bogus:code] an unknown kind") is None
    assert protocol.parse_error_marker("input 'x' is '[rejected:too_long] '") is None


def test_raw_bytes_and_bool_elements() -> None:
    assert protocol.bytes_element("hé") == b"\x03\x00\x00\x00h\xc3\xa9"
    assert protocol.bytes_element(b"") == b"\x00\x00\x00\x00"
    assert protocol.bool_element(True) == b"\x01" and protocol.bool_element(False) == b"\x00"


def test_the_hostile_corpus_is_large_varied_and_names_contract_rules(tmp_path: Path) -> None:
    from tools.hostile_corpus import hostile_corpus

    corpus = hostile_corpus(str(tmp_path / "marker"))
    rules = {case.rule for case in corpus}
    assert len(corpus) >= 60
    assert rules <= contract.RULES, rules - contract.RULES
    assert len(rules) >= 15
