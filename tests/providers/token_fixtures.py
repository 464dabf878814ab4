# ruff: noqa: E501, RUF001  (data: long literal texts, full-width CJK punctuation on purpose)
"""Texts with their token counts under OpenAI's cl100k_base encoding (GPT-4, GPT-3.5).

Counted once, when the fixtures were written, with tiktoken and the cl100k_base ranks (the
encoding file tiktoken downloads at run time, which this suite cannot; the bpe-openai package
ships the same file). Written by hand for the purpose; the ids, hashes, base64 and numbers were
made with a seeded random generator. Each entry: (kind, cl100k tokens, text).
"""

from __future__ import annotations

CL100K: list[tuple[str, int, str]] = [
    (
        "english",
        48,
        "The session service keeps every conversation in Redis, so any replica of the API can answer a request. When a user sends a message, the worker builds the context from the most recent messages, calls the model provider, and stores the reply.",
    ),
    (
        "english_chat",
        48,
        "hey, can you help me plan a trip to Lisbon next month? I'd like 4 days, mostly food & walking. Budget's around €800 — not counting flights. Also: what's the weather usually like in early May?",
    ),
    (
        "code",
        117,
        'def build_context(*, system_message: str, summary: str, events: Sequence[Event], budget_tokens: int) -> Context:\n    """Fit the newest history into budget_tokens."""\n    head: list[ChatMessage] = []\n    if system_message:\n        head.append(ChatMessage(role=Role.SYSTEM, content=system_message))\n    for message in reversed(history):\n        cost = estimate_messages([message])\n        if kept and used + cost > budget_tokens:\n            break\n    return Context(messages, estimate_messages(messages), history_tokens, len(history) - len(kept))\n',
    ),
    (
        "json",
        104,
        '{\n  "session_id": "user-42-main",\n  "model": "gpt-4o",\n  "labels": {\n    "team": "search",\n    "env": "prod"\n  },\n  "created_at": "2026-11-29T06:54:34Z",\n  "message_count": 128,\n  "usage": {\n    "prompt_tokens": 18234,\n    "completion_tokens": 912\n  },\n  "streaming": true\n}',
    ),
    (
        "chinese",
        134,
        "会话服务把每一段对话都保存在 Redis 中，因此任何一个接口副本都可以响应请求。用户发送消息时，工作进程会根据最近的消息构建上下文，调用模型提供方，然后保存回复。较长的对话会在后台进行摘要，已经写入的内容永远不会丢失。运维人员可以导出会话、删除会话，或者对整个租户应用保留策略。",
    ),
    (
        "japanese",
        155,
        "セッションサービスはすべての会話を Redis に保存するので、API のどのレプリカでもリクエストに応答できます。ユーザーがメッセージを送ると、ワーカーは最新のメッセージからコンテキストを組み立て、モデルプロバイダーを呼び出し、返信を保存します。長い会話はバックグラウンドで要約され、書き込まれた内容が失われることはありません。",
    ),
    (
        "korean",
        96,
        "세션 서비스는 모든 대화를 Redis에 저장하므로 API의 어떤 복제본이라도 요청에 응답할 수 있습니다. 사용자가 메시지를 보내면 작업자는 최근 메시지로 컨텍스트를 만들고 모델 제공자를 호출한 뒤 답장을 저장합니다.",
    ),
    (
        "russian",
        78,
        "Сервис сессий хранит каждый разговор в Redis, поэтому любая реплика API может ответить на запрос. Когда пользователь отправляет сообщение, обработчик собирает контекст из последних сообщений, вызывает модель и сохраняет ответ.",
    ),
    (
        "german",
        58,
        "Der Sitzungsdienst speichert jede Unterhaltung in Redis, sodass jede Replik der Schnittstelle eine Anfrage beantworten kann. Lange Gespräche werden im Hintergrund zusammengefasst; nichts Geschriebenes geht verloren.",
    ),
    (
        "french",
        56,
        "Le service de sessions conserve chaque conversation dans Redis : n'importe quelle réplique de l'API peut donc répondre à une requête. Les longues conversations sont résumées en arrière-plan, et rien de ce qui a été écrit n'est perdu.",
    ),
    (
        "arabic",
        130,
        "تحفظ خدمة الجلسات كل محادثة في ريديس، لذلك يمكن لأي نسخة من الواجهة أن تجيب على الطلب. عندما يرسل المستخدم رسالة، يبني العامل السياق من أحدث الرسائل ثم يستدعي مزود النموذج ويحفظ الرد.",
    ),
    (
        "hindi",
        172,
        "सत्र सेवा हर बातचीत को रेडिस में सहेजती है, इसलिए एपीआई की कोई भी प्रति अनुरोध का उत्तर दे सकती है। जब उपयोगकर्ता संदेश भेजता है, तो कार्यकर्ता हाल के संदेशों से संदर्भ बनाता है।",
    ),
    (
        "digits",
        111,
        "993908 404 8797323216 101071364 611097 8 614 55 1171979 1486 455824009 9 28 80004216501 9 1703729684 763 921773490 296 2420198 126478448 9914853944 13661115787 5101867205 70 618744967223 9 8133 58118295906 488218 8261117831 314328 2945",
    ),
    (
        "number_table",
        341,
        "7682.33, 1293.40, 2476.15, 3909.50, 8714.22, 805.81\n4491.87, 5494.40, 8833.84, 8192.80, 8639.84, 2784.21\n4152.97, 3587.71, 8841.93, 9577.31, 1509.21, 1762.18\n2319.57, 2333.36, 4849.63, 5891.24, 2627.47, 40.94\n4189.47, 3692.54, 5663.41, 9530.98, 6904.94, 5154.91\n6175.93, 6762.00, 539.93, 8995.33, 7799.69, 8745.13\n7978.73, 3923.79, 3989.79, 1035.37, 6342.90, 622.48\n673.48, 2087.63, 1623.03, 3400.54, 525.76, 2.33\n1512.65, 1014.64, 3636.10, 255.01, 8743.32, 6140.69\n1485.50, 2522.58, 3473.90, 3641.63, 1228.42, 8489.37",
    ),
    (
        "phone_dates",
        66,
        "Call +1 415 555 0199 or +44 20 7946 0958 before 2026-12-01 09:30; order #88412730 ships 03/12/2026, invoice 2026-000184 totals 1,284,990.45 USD.",
    ),
    (
        "uuids",
        141,
        "7afb2c68-774b-15d7-fa52-9ba3fe3bfada 24e4e25a-15fc-899e-4fd5-8dbe7bdc968b bd87a865-57b6-fb7e-bfea-a1551a28f7b3 b12aa1f6-d42f-ddbb-7a86-f7a243c71b9a 3488f876-05e9-99f3-842e-7fc229540a6e 5c9bcf35-873b-e078-f3b7-a50df373ca53",
    ),
    (
        "hex",
        115,
        "5feceb66ffc86f38d952786c6d696c79c2dbc239dd4e91b46729d73a27fb57e9 6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b d4735e3a265e16eee03f59718b9b5d03019c07d8b6c51f90da3a666eec13ab35",
    ),
    (
        "base64",
        178,
        "x4BUojmcz8n8wtoxzj3RZr3NOjOEflu7B/0Hykd4QjGxmvRYcs7vufxZ9PldFDgaOngyVjR7n/zmnNcAeuinWMykFdWpHuhjyLbAM3rjLW/KolUWzfL4uGV2Zr7yFbkoK/4gByaX53fOpyWc05j6eajvWSeMjCEFA8z4uaYahr/vI2/83zHT3zYHQDZKgD3DllNCi2vVIQ/ovVrldamV0OeEa9Pq4IAhiCaGggTfcMYumwHG",
    ),
    (
        "api_keys",
        157,
        "sk_UnW5gcF-Ha6ili8GjHEAD6_Wj9KfzjsQGMrb9h-ImB- sk_LK777pzNk8cL6j5IXAAjlsHUqJoUD_-Ydua-5ZMs1SW sk_OpQaPRYpzbLGViYXjU2JgJngKtFI3OyV2dZAkg05rK- sk_gqv81RKMGHZEM9YpvujA_C5Q52ryFlwRlOEVHzc0X0A sk_WIRh_JUqBlIFXZ53Ncqe28-ajY75FnCttn6kfaqDeMq",
    ),
    (
        "emoji",
        33,
        "Great job 🎉🎉 see you tomorrow 👋 — the build is green ✅ and the deploy 🚀 went fine 😀😀😀",
    ),
    (
        "markdown",
        51,
        "## Plan\n\n- [ ] Set up the **API** (`service/api`)\n- [x] Write the worker\n\n| name | value |\n| --- | --- |\n| ttl | 604800 |\n\n> Note: keep modules under ~400 lines.\n",
    ),
    ("whitespace", 17, "a\n\n\n\nb        c\t\t\td\n    indented line\n        deeper line\n"),
]
