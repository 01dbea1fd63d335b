"""Model references (SPEC §4): parsed once into provider, model id and suffix; aliases."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.errors import ConfigError, RefError
from gateway.refs import (
    AliasMap,
    ModelRef,
    build_alias_map,
    is_chain_name,
    parse_ref,
    resolve_model,
)

# (text, canonical str(ref), upstream id) for references that must parse.
VALID = [
    # the full form
    ("huggingface/deepseek-ai/DeepSeek-R1", "huggingface/deepseek-ai/DeepSeek-R1",
     "deepseek-ai/DeepSeek-R1"),
    # no prefix: a bare Hub id means the huggingface provider
    ("deepseek-ai/DeepSeek-R1", "huggingface/deepseek-ai/DeepSeek-R1", "deepseek-ai/DeepSeek-R1"),
    ("Qwen/Qwen2.5-7B-Instruct:cheapest", "huggingface/Qwen/Qwen2.5-7B-Instruct:cheapest",
     "Qwen/Qwen2.5-7B-Instruct:cheapest"),
    # a doubled (or tripled) prefix is tolerated
    ("huggingface/huggingface/Qwen/Qwen3-8B", "huggingface/Qwen/Qwen3-8B", "Qwen/Qwen3-8B"),
    ("huggingface/huggingface/huggingface/Qwen/Qwen3-8B", "huggingface/Qwen/Qwen3-8B",
     "Qwen/Qwen3-8B"),
    # the prefix in any case
    ("HuggingFace/Qwen/Qwen3-8B", "huggingface/Qwen/Qwen3-8B", "Qwen/Qwen3-8B"),
    # each policy suffix
    ("huggingface/Qwen/Qwen3-8B:cheapest", "huggingface/Qwen/Qwen3-8B:cheapest",
     "Qwen/Qwen3-8B:cheapest"),
    ("huggingface/Qwen/Qwen3-8B:fastest", "huggingface/Qwen/Qwen3-8B:fastest",
     "Qwen/Qwen3-8B:fastest"),
    ("huggingface/Qwen/Qwen3-8B:preferred", "huggingface/Qwen/Qwen3-8B:preferred",
     "Qwen/Qwen3-8B:preferred"),
    # suffixes are case-insensitive and kept lowercase
    ("huggingface/Qwen/Qwen3-8B:FASTEST", "huggingface/Qwen/Qwen3-8B:fastest",
     "Qwen/Qwen3-8B:fastest"),
    # provider slugs, with and without a hyphen
    ("huggingface/deepseek-ai/DeepSeek-R1:together", "huggingface/deepseek-ai/DeepSeek-R1:together",
     "deepseek-ai/DeepSeek-R1:together"),
    ("huggingface/deepseek-ai/DeepSeek-V3.2:fireworks-ai",
     "huggingface/deepseek-ai/DeepSeek-V3.2:fireworks-ai",
     "deepseek-ai/DeepSeek-V3.2:fireworks-ai"),
    ("meta-llama/Llama-3.3-70B-Instruct:sambanova",
     "huggingface/meta-llama/Llama-3.3-70B-Instruct:sambanova",
     "meta-llama/Llama-3.3-70B-Instruct:sambanova"),
    # surrounding white space is stripped; the model id keeps its case
    ("  huggingface/openai/gpt-oss-120b \t", "huggingface/openai/gpt-oss-120b",
     "openai/gpt-oss-120b"),
    # dots, underscores, digits
    ("huggingface/org_1/model.v2_x-9", "huggingface/org_1/model.v2_x-9", "org_1/model.v2_x-9"),
    # an org named like the provider stays an org when only two parts are left
    ("huggingface/CodeBERTa-small-v1", "huggingface/huggingface/CodeBERTa-small-v1",
     "huggingface/CodeBERTa-small-v1"),
]  # fmt: skip

# (text, a fragment the error message must contain to say why)
INVALID = [
    ("", "empty model reference"),
    ("   ", "empty model reference"),
    ("DeepSeek-R1", "no organisation part"),
    ("huggingface", "no organisation part"),
    ("together/meta-llama/Llama-3.3-70B-Instruct", "names provider 'together'"),
    ("openai/gpt-4o/x", "only 'huggingface' is supported"),
    ("huggingface/a/b/c", "too many '/' parts"),
    ("huggingface//DeepSeek-R1", "empty organisation"),
    ("huggingface/deepseek-ai/", "empty model name"),
    ("deepseek-ai/DeepSeek-R1:", "empty suffix"),
    ("huggingface/deepseek-ai/Deep Seek", "contains white space"),
    ("huggingface/deep\tseek/R1", "contains white space"),
    ("huggingface/Qwen/Qwen3-8B:cheap est", "contains white space"),
    ("huggingface/Qwen/Qwen3-8B:a:b", "suffix 'a:b' is not a policy"),
    ("huggingface/Qwen/Qwen3-8B:under_score", "is not a policy"),
    ("huggingface/Qwen/Qwen$3", "bad character in model name 'Qwen$3'"),
    ("huggingface/ørg/model", "bad character in organisation 'ørg'"),
    ("huggingface/org/a..b", "bad character in model name 'a..b'"),
    ("huggingface/org/-model", "bad character in model name '-model'"),
]


@pytest.mark.parametrize(("text", "canonical", "upstream"), VALID)
def test_valid_refs_parse_to_their_canonical_form_and_upstream_id(
    text: str, canonical: str, upstream: str
) -> None:
    """A valid ref prints as huggingface/<org>/<model>[:suffix]; the router gets no prefix."""
    ref = parse_ref(text)
    assert str(ref) == canonical
    assert ref.upstream_id == upstream
    assert ref.provider == "huggingface"
    assert parse_ref(str(ref)) == ref, "the canonical form parses to the same value"


@pytest.mark.parametrize(("text", "why"), INVALID)
def test_invalid_refs_raise_a_ref_error_that_says_why(text: str, why: str) -> None:
    """An invalid ref is a RefError (a ConfigError, exit 78) whose message gives the reason."""
    with pytest.raises(RefError) as info:
        parse_ref(text)
    assert why in str(info.value)
    assert isinstance(info.value, ConfigError)
    assert info.value.exit_code == 78


def test_the_table_has_at_least_25_cases() -> None:
    """The issue asks for a table of at least 25 ref cases."""
    assert len(VALID) + len(INVALID) >= 25


def test_suffix_splits_into_policy_or_provider() -> None:
    """`:fastest`/`:cheapest`/`:preferred` are policies; anything else is a provider slug."""
    assert parse_ref("a/b:cheapest").is_policy
    assert not parse_ref("a/b:together").is_policy
    assert parse_ref("a/b:together").suffix == "together"
    assert parse_ref("a/b").suffix is None
    assert parse_ref("a/b:groq").base == ModelRef("a/b")


def test_a_non_string_ref_is_an_error() -> None:
    """Config values of the wrong type never crash the parser."""
    with pytest.raises(RefError, match="must be a string, got int"):
        parse_ref(42)  # type: ignore[arg-type]


ALIASES = build_alias_map(
    [
        ("DeepSeek R1", parse_ref("huggingface/deepseek-ai/DeepSeek-R1")),
        ("Qwen3 8B (cheapest)", parse_ref("huggingface/Qwen/Qwen3-8B:cheapest")),
        # an alias shaped like a ref wins over the ref it looks like
        ("qwen/qwen3-8b", parse_ref("huggingface/meta-llama/Llama-3.1-8B-Instruct")),
    ]
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("DeepSeek R1", "huggingface/deepseek-ai/DeepSeek-R1"),
        ("deepseek r1", "huggingface/deepseek-ai/DeepSeek-R1"),
        ("  DEEPSEEK R1 ", "huggingface/deepseek-ai/DeepSeek-R1"),
        ("qwen3 8b (CHEAPEST)", "huggingface/Qwen/Qwen3-8B:cheapest"),
        ("Qwen/Qwen3-8B", "huggingface/meta-llama/Llama-3.1-8B-Instruct"),
        ("Qwen/Qwen3-32B:groq", "huggingface/Qwen/Qwen3-32B:groq"),
        ("huggingface/zai-org/GLM-4.7", "huggingface/zai-org/GLM-4.7"),
    ],
)
def test_resolve_model_matches_aliases_case_insensitively_then_parses_refs(
    name: str, expected: str
) -> None:
    """An alias matches in any case and with surrounding spaces; anything else is a ref."""
    assert str(resolve_model(name, ALIASES)) == expected


@pytest.mark.parametrize(
    ("name", "why"),
    [("gpt-4o", "no organisation part"), ("DeepSeek R2", "contains white space"), ("", "empty")],
)
def test_resolve_model_rejects_a_name_that_is_neither_alias_nor_ref(name: str, why: str) -> None:
    """An unknown name that is not a valid ref is a RefError (404 model_not_found upstream)."""
    with pytest.raises(RefError, match=why):
        resolve_model(name, ALIASES)


def test_alias_map_lists_aliases_as_written_and_looks_them_up_in_any_case() -> None:
    """Iteration shows the aliases as the user wrote them; lookups ignore case and spaces."""
    assert list(ALIASES) == ["DeepSeek R1", "Qwen3 8B (cheapest)", "qwen/qwen3-8b"]
    assert "deepseek R1" in ALIASES
    assert ALIASES.get("DEEPSEEK R1") == ModelRef("deepseek-ai/DeepSeek-R1")
    assert ALIASES.get(3) is None  # type: ignore[call-overload]
    assert len(ALIASES) == 3


def test_alias_map_drops_blank_aliases_and_a_later_case_variant_wins() -> None:
    """Blank aliases are ignored; two aliases equal but for case keep the later one."""
    first, second = ModelRef("a/b"), ModelRef("c/d")
    aliases = AliasMap([(" ", first), ("Fast", first), ("FAST", second)])
    assert dict(aliases) == {"FAST": second}


@pytest.mark.parametrize(
    ("name", "is_chain"),
    [
        ("coderclaw", True),
        ("Default", True),
        ("", True),
        ("  ", True),
        ("dummy", True),
        ("TGI", True),
        ("deepseek", False),
        ("tgi-large", False),
    ],
)
def test_chain_names(name: str, is_chain: bool) -> None:
    """`coderclaw`, `default`, an empty model and the placeholders `dummy` and `tgi` mean the
    configured chain (SPEC §6, §10.3)."""
    assert is_chain_name(name) is is_chain


@pytest.mark.parametrize(
    ("ref", "upstream", "text"),
    [
        (ModelRef("org/m"), "org/m", "huggingface/org/m"),
        (ModelRef("org/m", "fastest"), "org/m:fastest", "huggingface/org/m:fastest"),
        (ModelRef("org/m", "novita").base, "org/m", "huggingface/org/m"),
        (dataclasses.replace(ModelRef("org/m"), suffix="cheapest"), "org/m:cheapest",
         "huggingface/org/m:cheapest"),
    ],
)  # fmt: skip
def test_the_upstream_id_and_canonical_form_are_computed_once_and_stay_right(
    ref: ModelRef, upstream: str, text: str
) -> None:
    """The cached forms follow the fields, also through ``dataclasses.replace``, and take no
    part in equality or hashing."""
    assert (ref.upstream_id, str(ref)) == (upstream, text)
    assert ref == parse_ref(text) and hash(ref) == hash(parse_ref(text))
