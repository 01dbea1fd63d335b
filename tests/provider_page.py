"""Facts copied by hand from the provider page (PROVIDER_PAGE.txt).

They are the tests' own expectation, kept apart from ``gateway.catalog`` so that the built-in
catalog and the fake router are both checked against the page, not against each other.
"""

from __future__ import annotations

# The page's ten models, in the page's order.
PAGE_MODELS = [
    "deepseek-ai/DeepSeek-R1",
    "deepseek-ai/DeepSeek-V3.2",
    "Qwen/Qwen3-8B",
    "Qwen/Qwen2.5-7B-Instruct",
    "Qwen/Qwen3-32B",
    "meta-llama/Llama-3.3-70B-Instruct",
    "meta-llama/Llama-3.1-8B-Instruct",
    "openai/gpt-oss-120b",
    "zai-org/GLM-4.7",
    "moonshotai/Kimi-K2.5",
]
