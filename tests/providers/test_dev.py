from __future__ import annotations

import time

from workers.providers import DevProvider
from workers.providers.base import ChatMessage, Completion, Role, Usage
from workers.providers.dev import stream_chunks
from workers.tokens import estimate_messages, estimate_tokens

SYSTEM = ChatMessage(Role.SYSTEM, "You are a helpful assistant.")


def conversation(*prompts: str) -> list[ChatMessage]:
    """System prompt, then each prompt as a user message followed by an assistant reply."""
    messages = [SYSTEM]
    for index, prompt in enumerate(prompts):
        messages.append(ChatMessage(Role.USER, prompt))
        if index < len(prompts) - 1:
            messages.append(ChatMessage(Role.ASSISTANT, f"answer {index}"))
    return messages


async def complete(messages: list[ChatMessage], **options: int) -> Completion:
    return await DevProvider(**options).complete(messages, model="dev-echo")


async def test_same_input_gives_the_same_completion() -> None:
    messages = conversation("hello", "how are you?", "tell me a joke")
    assert await complete(messages) == await complete(messages)


async def test_reply_quotes_latest_prompt_and_lists_earlier_ones_in_order() -> None:
    messages = conversation("first question", "second question", "third question")
    reply = (await complete(messages)).content
    assert reply == (
        'You said: "third question". Earlier you asked: "first question"; "second question". '
        "(dev model, 6 messages in context)"
    )


async def test_earlier_prompts_are_shortened() -> None:
    long_prompt = "word " * 40
    reply = (await complete(conversation(long_prompt, "latest"))).content
    quoted = reply.split('Earlier you asked: "')[1].split('"')[0]
    assert len(quoted) <= 60
    assert quoted.endswith("...")


async def test_first_message_has_no_earlier_prompts() -> None:
    reply = (await complete(conversation("hi there"))).content
    assert reply == 'You said: "hi there". (dev model, 2 messages in context)'


async def test_compaction_summary_is_mentioned() -> None:
    messages = [
        SYSTEM,
        ChatMessage(Role.SYSTEM, 'Summary of earlier conversation: The user asked: 1) "cats".'),
        ChatMessage(Role.USER, "and dogs?"),
    ]
    reply = (await complete(messages)).content
    assert 'You said: "and dogs?"' in reply
    assert 'From the summary of our earlier conversation: The user asked: 1) "cats".' in reply


async def test_recall_question_lists_what_was_discussed() -> None:
    messages = conversation("cats", "dogs", "What were we discussing?")
    reply = (await complete(messages)).content
    assert reply == 'We discussed: "cats"; "dogs". You now ask: "What were we discussing?".'


async def test_recall_includes_the_summary_first() -> None:
    messages = [
        ChatMessage(Role.SYSTEM, "Summary of earlier conversation: The user asked about cats."),
        *conversation("dogs", "so, what did we discuss"),
    ]
    reply = (await complete(messages)).content
    assert reply.startswith(
        'We discussed: (from the summary) The user asked about cats; then "dogs".'
    )


async def test_recall_on_the_first_message() -> None:
    reply = (await complete(conversation("WHAT DID WE DISCUSS?"))).content
    assert reply.startswith("We discussed: nothing yet")


async def test_summarize_mode_lists_every_user_prompt() -> None:
    messages = [
        ChatMessage(Role.SYSTEM, "Summarize the conversation below in a few sentences."),
        *conversation("cats", "dogs", "birds")[1:],
    ]
    reply = (await complete(messages)).content
    assert reply == 'The user asked: 1) "cats"; 2) "dogs"; 3) "birds".'


async def test_summarize_mode_keeps_the_previous_summary() -> None:
    messages = [
        ChatMessage(Role.SYSTEM, "Summarize the conversation."),
        ChatMessage(Role.SYSTEM, 'Summary of earlier conversation: The user asked: 1) "cats".'),
        ChatMessage(Role.USER, "dogs"),
    ]
    reply = (await complete(messages)).content
    assert reply == 'Earlier: The user asked: 1) "cats". Then the user asked: 1) "dogs".'


async def test_summarize_mode_reads_a_transcript() -> None:
    transcript = "user: cats\nassistant: meow\nUser: dogs\nassistant: woof"
    messages = [
        ChatMessage(Role.SYSTEM, "Summarize this transcript."),
        ChatMessage(Role.USER, transcript),
    ]
    reply = (await complete(messages)).content
    assert reply == 'The user asked: 1) "cats"; 2) "dogs".'


async def test_compacted_context_is_visible_after_compaction() -> None:
    old = conversation("the history of Rome", "the fall of Byzantium")
    summary = (
        await complete([ChatMessage(Role.SYSTEM, "Summarize the conversation."), *old[1:]])
    ).content
    compacted = [
        SYSTEM,
        ChatMessage(Role.SYSTEM, f"Summary of earlier conversation: {summary}"),
        ChatMessage(Role.USER, "what were we discussing?"),
    ]
    reply = (await complete(compacted)).content
    assert reply.startswith("We discussed: ")
    assert "the history of Rome" in reply
    assert reply.index("history of Rome") < reply.index("fall of Byzantium")


async def test_title_is_the_first_six_words_capitalized() -> None:
    messages = [
        ChatMessage(Role.SYSTEM, "Write a short title for this conversation."),
        *conversation("what is the capital of France? I need it for a quiz.", "thanks")[1:],
    ]
    assert (await complete(messages)).content == "What is the capital of France"


async def test_title_drops_trailing_punctuation() -> None:
    messages = [
        ChatMessage(Role.USER, "fix my code!!!"),
        ChatMessage(Role.SYSTEM, "Write a short title (at most six words)."),
    ]
    assert (await complete(messages)).content == "Fix my code"


async def test_title_is_at_most_60_characters() -> None:
    word = "supercalifragilisticexpialidocious"
    messages = [
        ChatMessage(Role.SYSTEM, "Write a short title."),
        ChatMessage(Role.USER, f"{word} {word} {word}"),
    ]
    title = (await complete(messages)).content
    assert title == word.capitalize()


async def test_title_without_prompt_has_a_default() -> None:
    messages = [ChatMessage(Role.SYSTEM, "Write a short title.")]
    assert (await complete(messages)).content == "New conversation"


async def test_streaming_chunks_join_to_the_full_reply() -> None:
    chunks: list[str] = []

    async def on_delta(chunk: str) -> None:
        chunks.append(chunk)

    messages = conversation("one", "two three")
    completion = await DevProvider().complete(messages, model="dev-echo", on_delta=on_delta)
    assert "".join(chunks) == completion.content
    assert chunks == stream_chunks(completion.content)
    assert len(chunks) == len(completion.content.split())
    assert all(chunk.strip() for chunk in chunks)
    assert completion == await complete(messages)


async def test_stream_delay_is_honoured() -> None:
    chunks: list[str] = []

    async def on_delta(chunk: str) -> None:
        chunks.append(chunk)

    provider = DevProvider(stream_delay_ms=30)
    started = time.monotonic()
    await provider.complete(conversation("hi"), model="dev-echo", on_delta=on_delta)
    elapsed = time.monotonic() - started
    assert elapsed >= (len(chunks) - 1) * 0.03 * 0.9


async def test_usage_is_estimated_and_model_echoed() -> None:
    messages = conversation("hello")
    completion = await DevProvider().complete(messages, model="any-model")
    assert completion.model == "any-model"
    assert completion.usage == Usage(
        estimate_messages(messages), estimate_tokens(completion.content)
    )


async def test_no_user_message_still_answers() -> None:
    reply = (await complete([SYSTEM])).content
    assert reply == "Hello from the dev model. (dev model, 1 message in context)"


def test_messages_accept_plain_role_strings() -> None:
    assert ChatMessage("user", "hi").role is Role.USER  # type: ignore[arg-type]
