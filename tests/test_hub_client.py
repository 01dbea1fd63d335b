"""huggingface_hub's ``InferenceClient`` pointed at the gateway with ``base_url`` and no model
(SPEC §10.3): it sends the placeholder model ``dummy``, which means the configured chain."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.fake_router import FakeRouter, Reply
from tests.gateway_harness import run_gateway

hub = pytest.importorskip("huggingface_hub")


@pytest.mark.parametrize("stream", [False, True])
async def test_inference_client_without_a_model_is_served_by_the_chain(
    isolated_home: Path, router: FakeRouter, stream: bool
) -> None:
    router.script("org/model-a", Reply(chunks=2))
    async with run_gateway(isolated_home, router) as (base, _):

        def ask() -> str:
            client = hub.InferenceClient(base_url=base, api_key="unused")
            messages = [{"role": "user", "content": "Hi"}]
            if stream:
                pieces = client.chat_completion(messages, stream=True, max_tokens=20)
                return "".join(p.choices[0].delta.content or "" for p in pieces if p.choices)
            return str(client.chat_completion(messages, max_tokens=20).choices[0].message.content)

        text = await asyncio.to_thread(ask)
    assert text == "Hello from org/model-a"
    sent = router.chat_requests()[-1]
    assert sent.model == "org/model-a"
