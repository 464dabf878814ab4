"""The OpenAI Agents SDK adapter with the real SDK: its session behaviour, and a ``Runner`` run
driven by a model inside the test (no network) whose tool calls are stored and read back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from agents import Agent, Model, ModelResponse, RunConfig, Runner, Usage, function_tool
from agents.memory import Session as SdkSession
from agents.memory import SessionSettings
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)
from redis_sessions_client import SessionClient, SessionError
from redis_sessions_client.agents import ServiceSession

from service.runtime import Runtime
from tests.client.asgi import StreamingASGITransport
from tests.client.conftest import BASE_URL


@pytest.fixture
async def client(transport: StreamingASGITransport, api_key: str) -> AsyncIterator[SessionClient]:
    async with SessionClient(BASE_URL, api_key=api_key, transport=transport) as c:
        yield c


def message(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "content": text}


async def test_session_protocol_order_limit_pop_clear(
    client: SessionClient, runtime: Runtime
) -> None:
    session = ServiceSession("agent-1", client, labels={"app": "agents"}, ttl_seconds=900)
    assert isinstance(session, SdkSession)
    assert await session.get_items() == []  # nothing created by a read
    assert await session.pop_item() is None
    items = [message("user", f"m{i}") for i in range(5)]
    await session.add_items(items[:2])
    await session.add_items(items[2:])
    await session.add_items([])
    assert await session.get_items() == items
    assert await session.get_items(limit=2) == items[3:]
    assert await session.get_items(limit=0) == []
    assert await session.get_items(limit=50) == items

    assert await session.pop_item() == items[4]
    assert await session.get_items() == items[:4]
    await session.clear_session()
    assert await session.get_items() == []
    assert await session.pop_item() is None
    await session.add_items([message("user", "again")])
    assert await session.get_items() == [message("user", "again")]

    info = await runtime.store.tenant("acme").get("agent-1")
    assert info.mode.value == "store" and info.labels == {"app": "agents"}
    assert info.ttl_seconds == 900

    await client.delete_session("agent-1")  # gone (deleted, expired): the next write makes it
    await session.add_items([message("user", "again")])
    assert await session.get_items() == [message("user", "again")]

    limited = ServiceSession("agent-1", client, session_settings=SessionSettings(limit=1))
    await limited.add_items([message("assistant", "last")])
    assert await limited.get_items() == [message("assistant", "last")]
    assert len(await limited.get_items(limit=5)) == 2


async def test_sessions_of_two_handles_share_one_order(client: SessionClient) -> None:
    writers = [ServiceSession("shared", client) for _ in range(8)]

    async def write(w: int, session: ServiceSession) -> None:
        for b in range(5):
            await session.add_items([message("user", f"{w}:{b}:{k}") for k in range(2)])

    await asyncio.gather(*(write(w, s) for w, s in enumerate(writers)))
    items = await ServiceSession("shared", client).get_items()
    texts = [i["content"] for i in items]
    assert len(texts) == 8 * 5 * 2
    for i in range(0, len(texts), 2):  # batches stay whole
        assert texts[i].rsplit(":", 1)[0] == texts[i + 1].rsplit(":", 1)[0]
    for w in range(8):
        mine = [t for t in texts if t.startswith(f"{w}:")]
        assert mine == [f"{w}:{b}:{k}" for b in range(5) for k in range(2)]


class ScriptedModel(Model):
    """A model inside the test: first asks for the weather tool, then answers with its output.
    It records the input of every call, so the test sees what the SDK sent."""

    def __init__(self) -> None:
        self.inputs: list[Any] = []

    async def get_response(
        self, system_instructions: Any, input: Any, *args: Any, **kw: Any
    ) -> Any:
        self.inputs.append(input)
        items = input if isinstance(input, list) else [{"role": "user", "content": input}]
        outputs = [i for i in items if i.get("type") == "function_call_output"]
        if not outputs or len(outputs) < sum(1 for i in items if i.get("role") == "user"):
            call = ResponseFunctionToolCall(
                id=f"fc_{len(self.inputs)}",
                call_id=f"call_{len(self.inputs)}",
                name="weather",
                arguments='{"city": "Paris"}',
                type="function_call",
                status="completed",
            )
            return ModelResponse(output=[call], usage=Usage(), response_id=None)
        text = f"It is {outputs[-1]['output']} in Paris."
        reply = ResponseOutputMessage(
            id=f"msg_{len(self.inputs)}",
            content=[ResponseOutputText(text=text, type="output_text", annotations=[])],
            role="assistant",
            status="completed",
            type="message",
        )
        return ModelResponse(output=[reply], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kw: Any) -> Any:  # pragma: no cover - not streamed
        raise NotImplementedError


NO_TRACE = RunConfig(tracing_disabled=True)


@function_tool
def weather(city: str) -> str:
    """The weather in a city."""
    return "18C and sunny"


async def test_runner_stores_tool_calls_and_reads_them_back(client: SessionClient) -> None:
    model = ScriptedModel()
    agent = Agent(name="assistant", instructions="Be brief.", model=model, tools=[weather])
    session = ServiceSession("run-1", client)

    result = await Runner.run(
        agent, "What is the weather in Paris?", session=session, run_config=NO_TRACE
    )
    assert result.final_output == "It is 18C and sunny in Paris."
    items = await session.get_items()
    kinds = [i.get("type", "message") for i in items]
    assert kinds == ["message", "function_call", "function_call_output", "message"]
    assert items[0]["content"] == "What is the weather in Paris?"
    assert items[1]["name"] == "weather" and items[1]["call_id"] == "call_1"
    assert items[2] == {
        "call_id": "call_1",
        "output": "18C and sunny",
        "type": "function_call_output",
    }
    assert items[3]["content"][0]["text"] == "It is 18C and sunny in Paris."

    # a second run (a new handle: any process) sends the stored history to the model
    again = ServiceSession("run-1", client)
    result = await Runner.run(agent, "And tomorrow?", session=again, run_config=NO_TRACE)
    sent = model.inputs[2]
    assert sent[:4] == items
    assert sent[4]["content"] == "And tomorrow?"
    assert len(await again.get_items()) == 8


async def test_the_session_is_storage_only(client: SessionClient, api_key: str) -> None:
    session = ServiceSession("quiet", client)
    await session.add_items([message("user", "hi")])
    session_handle = await client.resume_session("quiet")
    with pytest.raises(SessionError) as caught:
        await session_handle.send("hi")
    assert caught.value.status_code == 409
    assert await session.get_items() == [message("user", "hi")]
