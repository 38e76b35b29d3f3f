"""The chat fuzz target: its seeds, a fixed batch of its mutations, the
invariant checker of accepted prompts (shown not to be vacuous) and the
replay of saved findings. `python -m tools.fuzz --target chat` runs the same
seeds, mutators and contract for as long as it is given."""

from __future__ import annotations

import base64
import collections
import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from embeds_backend.chat_messages import (
    ChatMessage,
    ChatParameters,
    Conversation,
    EmbedsPart,
    TextPart,
    parse_conversation,
)
from embeds_backend.chat_prompt import build_chat_prompt
from embeds_backend.contract import EMBEDS_PART, EMBEDS_PLACEHOLDER, Rule
from embeds_backend.errors import RequestRejected
from tools.fuzz import chat_oracle
from tools.fuzz.__main__ import main
from tools.fuzz.campaign import Finding, run_one, save_finding
from tools.fuzz.chat_inputs import TREE_MUTATORS, data, make_case, mutate, rows, seed_inputs, text
from tools.fuzz.chat_oracle import (
    CHAT_LIMITS,
    CHAT_RULES,
    ChatCase,
    ContractViolation,
    ExpectedPrompt,
    RawSpec,
    check_conversation,
    check_location,
    check_prompt,
    execute,
    expected_prompt,
    setup,
)
from tools.fuzz.oracle import (
    DECODE_RULES,
    HIDDEN,
    Outcome,
    check_base64_contract,
    checked_rejection,
    limits_for,
)
from tools.fuzz.targets import get_target
from tools.payloads import saved

TARGET = get_target("chat")
SEEDS = seed_inputs()
USER = {"role": "user", "content": "Hello world!"}

# What the fuzzer found in the chat modules, as the smallest inputs that
# showed it, and how each must end now: name -> (input, rule).
DEEP = "[" * 1200 + '"a"' + "]" * 1200
FOUND: dict[str, tuple[bytes, str]] = {
    # A lone surrogate (a JSON escape, or the UTF-8 bytes of one, which
    # json.loads decodes with surrogatepass) made the tokenizer raise.
    "lone_surrogate_escaped": (make_case([{"role": "user", "content": "\ud800"}]), Rule.BAD_MESSAGES),
    "lone_surrogate_bytes": (
        make_case([USER]).replace(b"Hello", b"\xed\xa0\x80"),
        Rule.BAD_MESSAGES,
    ),
    "lone_surrogate_in_kwargs": (
        make_case([USER], b'{"chat_template_kwargs": {"greeting": "\\udcff"}}', setup="strict"),
        Rule.BAD_CHAT_PARAMETERS,
    ),
    # The placeholder spelled \u003cprompt_embeds> passed the check on the
    # raw JSON text; with a template that drops a message and renders the
    # kwarg, the part's rows went where the kwarg stood.
    "escaped_placeholder_in_kwargs": (
        make_case(
            [{"role": "user", "content": [data(2)]}, USER],
            b'{"chat_template_kwargs": {"greeting": "\\u003cprompt_embeds>"}}',
            setup="last_message",
        ),
        Rule.RESERVED_PLACEHOLDER,
    ),
    # Nested past the interpreter's recursion limit yet within the JSON
    # decoder's (Python 3.12 and later count them apart): a recursive check
    # of the kwargs raised RecursionError.
    "deeply_nested_kwargs": (
        make_case([USER], f'{{"chat_template_kwargs": {{"x": {DEEP}}}}}'.encode()),
        Rule.BAD_CHAT_PARAMETERS,
    ),
}


# -- seeds -------------------------------------------------------------------------------------
@pytest.mark.parametrize("index", range(len(SEEDS)))
def test_every_seed_is_accepted_with_the_invariants_holding(index: int) -> None:
    """execute() checks the conversation and the prompt's invariants itself."""
    outcome = execute(SEEDS[index])
    assert outcome.rule == "accepted", outcome.message


def test_seeds_cover_every_kind_of_conversation() -> None:
    cases = [ChatCase.decode(seed) for seed in SEEDS]
    shapes = {execute(seed).message for seed in SEEDS}
    assert shapes == {"token ids", "mixed"}
    assert any(case.raw for case in cases) and any(not case.raw for case in cases)
    assert any(b'"data"' in case.messages for case in cases)
    assert any(b'"data"' in case.messages and b'"rows"' in case.messages for case in cases)
    assert {case.parameters for case in cases} >= {None, b"", b"{}"}
    assert {setup(case.setup).name for case in cases} == {"chatml", "parts", "strict", "last_message"}
    assert {case.engine_dtype for case in cases} == {0, 1, 2}


def test_inputs_round_trip_and_any_bytes_are_a_case() -> None:
    for seed in SEEDS:
        assert ChatCase.decode(seed).encode() == seed
    rng = random.Random(0)
    for raw in (b"", b"\x04", b"\xff" * 12, *(rng.randbytes(rng.randrange(40)) for _ in range(50))):
        case = ChatCase.decode(raw)
        assert ChatCase.decode(case.encode()) == case
        assert execute(raw).rule in CHAT_RULES | {"accepted"}


# -- mutations ---------------------------------------------------------------------------------
def test_a_fixed_batch_of_mutations_keeps_the_contract_and_spreads_over_the_rules() -> None:
    """As the campaign's loop does: parents from the seeds or from inputs
    with new outcomes. No finding; many rules reached, accepted inputs
    among them."""
    rng = random.Random(20240601)
    corpus, signatures = list(SEEDS), set()
    rules: collections.Counter[str] = collections.Counter()
    findings = []
    for _ in range(600):
        parent = rng.choice(SEEDS if rng.random() < 0.5 else corpus)
        child = mutate(parent, rng, corpus)
        signature, finding, _ = run_one(child, TARGET)
        rules[signature.split(" ")[0]] += 1
        if finding is not None:
            findings.append(finding)
        elif signature not in signatures:
            signatures.add(signature)
            corpus.append(child)
    assert not findings, "\n\n".join(f"{f.key}\n{f.data[:300]!r}" for f in findings)
    assert rules["accepted"] >= 50, rules
    reached = set(rules) & CHAT_RULES
    assert len(reached) >= 10, rules
    assert {Rule.BAD_MESSAGES, Rule.CHAT_ROWS, Rule.BAD_CHAT_PARAMETERS, Rule.RESERVED_PLACEHOLDER} <= reached


@pytest.mark.parametrize("mutator", TREE_MUTATORS, ids=lambda mutator: mutator.__name__)
def test_each_tree_mutator_keeps_the_contract(mutator: Any) -> None:
    rng = random.Random(mutator.__name__)
    for seed in SEEDS:
        case = ChatCase.decode(seed)
        tree = mutator(json.loads(case.messages), rng)
        child = replace(case, messages=json.dumps(tree, ensure_ascii=False).encode("utf-8", "surrogatepass"))
        _, finding, _ = run_one(child.encode(), TARGET)
        assert finding is None, finding.report


@pytest.mark.parametrize("name", list(FOUND))
def test_what_the_fuzzer_found_stays_fixed(name: str) -> None:
    data_, rule = FOUND[name]
    assert execute(data_).rule == rule


def marked_as_directory(payload: bytes, member: str) -> bytes:
    """The payload with `member`'s central directory entry given the MS-DOS
    directory attribute (0x10): miniz then extracts nothing into the buffer
    torch allocated for it, and torch.load reads that buffer uninitialized."""
    out = bytearray(payload)
    at = payload.find(b"PK\x01\x02")
    while at != -1:
        name_length = int.from_bytes(payload[at + 28 : at + 30], "little")
        if payload[at + 46 : at + 46 + name_length].decode().endswith(member):
            out[at + 38 : at + 42] = (0x10).to_bytes(4, "little")
        at = payload.find(b"PK\x01\x02", at + 4)
    return bytes(out)


UNWRITTEN_STORAGE = base64.b64encode(marked_as_directory(saved(torch.ones(64, HIDDEN)), "data/0")).decode()


@pytest.mark.parametrize("path", ["prompt_embeds_base64", "chat data part"])
def test_a_storage_marked_as_directory_is_refused(path: str) -> None:
    """Found by the chat oracle (a part decoded twice gave two tensors): it
    must be refused, and not for its (arbitrary) values."""
    if path == "chat data part":
        messages = [{"role": "user", "content": [{"type": EMBEDS_PART, "data": UNWRITTEN_STORAGE}]}]
        outcome = execute(make_case(messages))
    else:
        outcome = check_base64_contract(UNWRITTEN_STORAGE, limits_for(torch.float32))
    assert outcome.rule in DECODE_RULES - {Rule.NOT_FINITE}, outcome.message


# -- the checks are not vacuous --------------------------------------------------------------------
def accepted_mixed_prompt() -> tuple[dict[str, Any], ExpectedPrompt]:
    """A valid mixed prompt (data and rows parts) and what it must agree with."""
    messages = [{"role": "user", "content": [text("Hello"), rows(2), data(3), text("world"), rows(1)]}]
    case = ChatCase.decode(make_case(messages, raw=RawSpec(rows=3)))
    raw = case.raw.tensor() if case.raw else None
    model = setup(case.setup)
    conversation = parse_conversation(case.messages, None, CHAT_LIMITS)
    prompt = build_chat_prompt(
        conversation, raw, model.templating, case.limits, case.max_tokens, case.max_model_len
    )
    return prompt, expected_prompt(conversation, raw, case, model)


def _flip_one_flag(prompt: dict[str, Any]) -> None:
    mask = prompt["prompt_is_token_ids"]
    mask[mask.index(False)] = True


def _zero_one_spliced_row(prompt: dict[str, Any]) -> None:
    prompt["prompt_embeds"][prompt["prompt_is_token_ids"].index(False)] = 0


def _swap_two_parts(prompt: dict[str, Any]) -> None:
    spliced = [i for i, flag in enumerate(prompt["prompt_is_token_ids"]) if not flag]
    rows_ = prompt["prompt_embeds"]
    rows_[[spliced[0], spliced[-1]]] = rows_[[spliced[-1], spliced[0]]]


BREAKERS = {
    "a flag flipped": _flip_one_flag,
    "a spliced row zeroed": _zero_one_spliced_row,
    "two parts swapped": _swap_two_parts,
    "a token row non-zero": lambda p: p["prompt_embeds"][0].fill_(1.0),
    "a row not finite": lambda p: p["prompt_embeds"][p["prompt_is_token_ids"].index(False)].fill_(
        float("nan")
    ),
    "a row dropped": lambda p: p.update(prompt_embeds=p["prompt_embeds"][:-1]),
    "an id dropped": lambda p: p["prompt_token_ids"].pop(),
    "an extra spliced position": lambda p: (
        p["prompt_token_ids"].append(p["prompt_token_ids"][p["prompt_is_token_ids"].index(False)]),
        p["prompt_is_token_ids"].append(False),
        p.update(prompt_embeds=torch.cat([p["prompt_embeds"], p["prompt_embeds"][-1:]])),
    ),
    "the wrong dtype": lambda p: p.update(prompt_embeds=p["prompt_embeds"].half()),
    "flags as integers": lambda p: p.update(prompt_is_token_ids=[int(f) for f in p["prompt_is_token_ids"]]),
    "an id past the vocabulary": lambda p: p["prompt_token_ids"].__setitem__(0, 10**6),
    "the rows left out": lambda p: p.pop("prompt_embeds"),
}


@pytest.mark.parametrize("breaker", list(BREAKERS))
def test_the_prompt_checker_catches_a_broken_prompt(breaker: str) -> None:
    prompt, expected = accepted_mixed_prompt()
    check_prompt(prompt, expected)  # the control: the unbroken prompt passes
    BREAKERS[breaker](prompt)
    with pytest.raises(ContractViolation):
        check_prompt(prompt, expected)


def test_the_prompt_checker_catches_length_and_text_only_breaches() -> None:
    prompt, expected = accepted_mixed_prompt()
    total = len(prompt["prompt_token_ids"])
    check_prompt(prompt, replace(expected, max_model_len=total + expected.max_tokens))
    with pytest.raises(ContractViolation, match="in a context of"):
        check_prompt(prompt, replace(expected, max_model_len=total + expected.max_tokens - 1))
    with pytest.raises(ContractViolation, match="a text-only chat became"):
        check_prompt(prompt, replace(expected, parts=[]))
    placeholder = expected.placeholder_id
    with pytest.raises(ContractViolation, match="carry the embeddings placeholder"):
        check_prompt({"prompt_token_ids": [1, placeholder, 2]}, replace(expected, parts=[]))
    with pytest.raises(ContractViolation, match="parts of"):
        check_prompt(prompt, replace(expected, parts=expected.parts[:-1]))


def test_the_conversation_checker_catches_what_parsing_must_refuse() -> None:
    user = ChatMessage("user", (TextPart("hi"),))
    check_conversation(Conversation((user,), ChatParameters()))
    broken = {
        "placeholder in text": Conversation(
            (ChatMessage("user", (TextPart(EMBEDS_PLACEHOLDER),)),), ChatParameters()
        ),
        "placeholder in a name": Conversation(
            (ChatMessage("user", (), EMBEDS_PLACEHOLDER),), ChatParameters()
        ),
        "placeholder in kwargs": Conversation(
            (user,), ChatParameters(chat_template_kwargs={"a": [{"b": f"x{EMBEDS_PLACEHOLDER}"}]})
        ),
        "unknown role": Conversation((ChatMessage("wizard", ()),), ChatParameters()),
        "rows not positive": Conversation(
            (ChatMessage("user", (EmbedsPart("w", rows=0),)),), ChatParameters()
        ),
        "both flags": Conversation((user,), ChatParameters(continue_final_message=True)),
        "no messages": Conversation((), ChatParameters()),
    }
    for name, conversation in broken.items():
        with pytest.raises(ContractViolation):
            check_conversation(conversation)
            pytest.fail(name)


def test_rejections_are_held_to_their_rules_and_locations() -> None:
    with pytest.raises(ContractViolation, match="unknown rule"):
        checked_rejection(RequestRejected(Rule.BAD_SAMPLING, "max_tokens"), CHAT_RULES)
    with pytest.raises(ContractViolation, match="empty message"):
        checked_rejection(RequestRejected(Rule.BAD_MESSAGES, " "), CHAT_RULES)
    conversation = parse_conversation(
        json.dumps([{"role": "user", "content": [rows(1), data(2)]}]), None, CHAT_LIMITS
    )
    check_location(Outcome(Rule.NOT_FINITE, "messages[0].content[1]: nan"), conversation, raw_given=False)
    check_location(Outcome(Rule.NOT_FINITE, "rows 0..1 hold nan"), conversation, raw_given=True)
    with pytest.raises(ContractViolation, match="no data part"):
        check_location(Outcome(Rule.NOT_FINITE, "messages[0].content[0]: nan"), conversation, raw_given=True)
    with pytest.raises(ContractViolation, match="without a part's location"):
        check_location(Outcome(Rule.NOT_FINITE, "rows hold nan"), conversation, raw_given=False)


# -- findings and replay -------------------------------------------------------------------------
def test_a_saved_finding_replays_for_its_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_finding(Finding("crash", "crash key", SEEDS[4], "report"), tmp_path, TARGET)
    assert path.name.startswith("chat-crash-") and path.with_suffix(".txt").read_text().count("target: chat")
    assert main(["--replay", str(path)]) == 0  # the target comes from the file name
    assert capsys.readouterr().out.startswith("accepted in ")
    # A file without the prefix (atheris names its own) needs --target.
    bare = tmp_path / "crash-0123.bin"
    bare.write_bytes(SEEDS[4])
    assert main(["--replay", str(bare), "--target", "chat"]) == 0
    # A broken contract replays as the finding it is.
    monkeypatch.setattr(chat_oracle, "check_prompt", _always_broken)
    assert main(["--replay", str(path)]) == 1
    assert "ContractViolation: broken on purpose" in capsys.readouterr().err


def _always_broken(prompt: dict[str, Any], expected: ExpectedPrompt) -> None:
    raise ContractViolation("broken on purpose")


def test_embeds_findings_keep_their_names_and_target(tmp_path: Path) -> None:
    path = save_finding(Finding("hang", "hang key", b"\x00", "report"), tmp_path)
    assert path.name.startswith("hang-")
    assert main(["--replay", str(path)]) == 0  # the embeds target: a one-byte payload is refused
