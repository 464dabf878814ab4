"""The LangChain adapter with the real langchain-core: its async history, and a
``RunnableWithMessageHistory`` round trip with langchain-core's fake chat model. (The sync
methods need a real server: tests/faults/test_adapter_replicas.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory
from redis_sessions_client import SessionClient
from redis_sessions_client.langchain import ServiceChatMessageHistory

from service.runtime import Runtime
from tests.client.asgi import StreamingASGITransport
from tests.client.conftest import BASE_URL


@pytest.fixture
async def client(transport: StreamingASGITransport, api_key: str) -> AsyncIterator[SessionClient]:
    async with SessionClient(BASE_URL, api_key=api_key, transport=transport) as c:
        yield c


async def test_async_history_round_trips_every_message_kind(
    client: SessionClient, runtime: Runtime
) -> None:
    history = ServiceChatMessageHistory("lc-1", client=client, labels={"app": "lc"})
    assert await history.aget_messages() == []
    messages = [
        SystemMessage("Be brief."),
        HumanMessage("Weather in Paris?"),
        AIMessage(
            "",
            tool_calls=[{"name": "weather", "args": {"city": "Paris"}, "id": "call_1"}],
        ),
        ToolMessage("18C", tool_call_id="call_1"),
        AIMessage("18C and sunny."),
    ]
    await history.aadd_messages(messages[:2])
    await history.aadd_messages(messages[2:])
    assert await history.aget_messages() == messages
    info = await runtime.store.tenant("acme").get("lc-1")
    assert info.mode.value == "store" and info.labels == {"app": "lc"}
    await history.aclear()
    assert await history.aget_messages() == []
    assert (await runtime.store.tenant("acme").get("lc-1")).labels == {"app": "lc"}
    await history.aclose()


# deprecated in langchain-core 1.x in favour of LangGraph's persistence, and still what the
# history classes are used with
@pytest.mark.filterwarnings("ignore::langchain_core._api.deprecation.LangChainDeprecationWarning")
async def test_runnable_with_message_history_round_trip(client: SessionClient) -> None:
    prompt = ChatPromptTemplate.from_messages(
        [MessagesPlaceholder("history"), ("human", "{input}")]
    )
    model = FakeListChatModel(responses=["Hello Ada.", "Your name is Ada."])
    histories: list[ServiceChatMessageHistory] = []

    def history_of(session_id: str) -> ServiceChatMessageHistory:
        histories.append(ServiceChatMessageHistory(session_id, client=client))
        return histories[-1]

    chain = RunnableWithMessageHistory(
        prompt | model,
        history_of,
        input_messages_key="input",
        history_messages_key="history",
    )
    config = {"configurable": {"session_id": "lc-run"}}
    first = await chain.ainvoke({"input": "I am Ada."}, config=config)
    second = await chain.ainvoke({"input": "Who am I?"}, config=config)
    assert (first.content, second.content) == ("Hello Ada.", "Your name is Ada.")
    stored = await ServiceChatMessageHistory("lc-run", client=client).aget_messages()
    assert [(type(m).__name__, m.content) for m in stored] == [
        ("HumanMessage", "I am Ada."),
        ("AIMessage", "Hello Ada."),
        ("HumanMessage", "Who am I?"),
        ("AIMessage", "Your name is Ada."),
    ]
    for h in histories:
        await h.aclose()
