/** Both recipes' flows, and bad input, against a real `sessionctl dev`. */

import assert from "node:assert/strict";
import { after, before, beforeEach, test } from "node:test";

import {
  APIError,
  AuthenticationError,
  ConflictError,
  finishReason,
  type SessionEvent,
  SessionClient,
  SessionNotFoundError,
  ValidationError,
} from "redis-sessions-client";

import { type DevServer, startDevServer } from "./harness.js";

let server: DevServer;
let client: SessionClient;

before(async () => {
  server = await startDevServer();
});
after(async () => {
  await server?.stop();
});
beforeEach(async () => {
  client = new SessionClient({ baseUrl: server.url, apiKey: server.apiKey });
  for (const info of await client.listSessions()) await client.deleteSession(info.sessionId);
});

test("the TypeScript recipe: create, converse, destroy, resume, list, history, delete", async () => {
  await client.start();
  const session = await client.createSession({ sessionId: "user-123-conversation", model: "gpt-5" });
  const first = await session.sendAndWait({ prompt: "Let's discuss TypeScript generics" });
  assert.equal(finishReason(first), "stop"); // the dev model answers whole
  assert.equal(first.type, "assistant.message");
  assert.match(String(first.data.content), /Let's discuss TypeScript generics/);
  assert.equal(session.sessionId, "user-123-conversation");
  await session.destroy();
  await client.stop();

  const later = new SessionClient({ baseUrl: server.url, apiKey: server.apiKey });
  await later.start();
  const resumed = await later.resumeSession("user-123-conversation");
  const reply = await resumed.sendAndWait({ prompt: "What were we discussing?" });
  assert.match(String(reply.data.content), /TypeScript generics/);

  const sessions = await later.listSessions();
  assert.deepEqual(
    sessions.map((s) => s.sessionId),
    ["user-123-conversation"],
  );
  assert.ok(sessions[0]?.modifiedTime instanceof Date && !Number.isNaN(sessions[0].modifiedTime.getTime()));
  assert.equal(sessions[0]?.isRemote, false);

  const messages = await resumed.getMessages();
  for (const msg of messages) {
    assert.deepEqual(Object.keys(msg).sort(), ["data", "id", "timestamp", "type"]);
  }
  const conversation = messages.filter((m) => m.type.endsWith(".message"));
  assert.deepEqual(
    conversation.map((m) => m.type),
    ["user.message", "assistant.message", "user.message", "assistant.message"],
  );
  assert.equal(conversation[0]?.data.content, "Let's discuss TypeScript generics");
  assert.equal(conversation[3]?.id, reply.id);
  await resumed.destroy();

  await later.deleteSession("user-123-conversation");
  await assert.rejects(later.resumeSession("user-123-conversation"), SessionNotFoundError);
  await later.stop();
});

async function getOrCreateSession(sessionId: string, config: { infiniteSessions?: boolean } = {}) {
  try {
    return await client.resumeSession(sessionId);
  } catch (error) {
    if (!(error instanceof SessionNotFoundError)) throw error;
    return client.createSession({ sessionId, ...config });
  }
}

test("the Python recipe's flow: custom ids, infinite sessions, history, bookmarks, cleanup", async () => {
  const userSession = await client.createSession({ sessionId: "user-42-main" });
  await client.createSession({ sessionId: "project-webapp-2024" });
  await client.createSession({ sessionId: "task-1337-review" });
  assert.equal(userSession.metadata.infinite, false);
  assert.ok(userSession.metadata.expiresAt instanceof Date);

  const assistant = await client.createSession({ sessionId: "persistent-assistant", infiniteSessions: true });
  assert.equal(assistant.metadata.infinite, true);
  assert.equal(assistant.metadata.expiresAt, null);
  await assistant.sendAndWait({ prompt: "Let's start the design" });
  const mark = await assistant.setBookmark("design_start", "Beginning of design discussion");
  assert.equal(mark.messageCount, 2);
  await assistant.sendAndWait("Now let's discuss implementation");
  const since = await assistant.getMessagesSince("design_start");
  assert.deepEqual(
    since.map((m) => m.role),
    ["user", "assistant"],
  );
  const history = (await assistant.getConversation()).map((m) => ({ role: m.role, content: m.content, id: m.id }));
  assert.equal(history.length, 4);
  assert.equal(history[0]?.content, "Let's start the design");

  const listed = await client.listSessions();
  assert.equal(listed[0]?.sessionId, "persistent-assistant"); // newest modified first
  assert.deepEqual(new Set(listed.map((s) => s.sessionId)), new Set([
    "user-42-main",
    "project-webapp-2024",
    "task-1337-review",
    "persistent-assistant",
  ]));
  const exported = await assistant.export();
  assert.equal((exported.session as { session_id: string }).session_id, "persistent-assistant");

  const fresh = await getOrCreateSession("my-session");
  assert.equal(fresh.metadata.messageCount, 0);
  await fresh.sendAndWait({ prompt: "Keep this for later" });
  const again = await getOrCreateSession("my-session");
  assert.equal(again.metadata.messageCount, 2);

  for (const info of await client.listSessions()) await client.deleteSession(info.sessionId);
  assert.deepEqual(await client.listSessions(), []);
  await client.stop();
});

test("live events reach on() handlers, by type or all, until unsubscribed", async () => {
  const session = await client.createSession({ sessionId: "watched", streaming: true });
  const seen: string[] = [];
  const deltas: string[] = [];
  let idle!: () => void;
  const gotIdle = new Promise<void>((resolve) => (idle = resolve));
  const offAll = session.on((event: SessionEvent) => {
    seen.push(event.type);
    if (event.type === "session.idle") idle();
  });
  const offDeltas = session.on("assistant.message_delta", (event) => {
    deltas.push(String(event.data.deltaContent));
  });
  const reply = await session.sendAndWait({ prompt: "stream this to me please" });
  await gotIdle;
  assert.equal(seen[0], "user.message");
  assert.ok(seen.includes("assistant.message"));
  assert.ok(deltas.length > 3);
  assert.equal(deltas.join(""), reply.data.content);
  offAll();
  assert.equal(session.listening, true);
  offDeltas();
  assert.equal(session.listening, false);
  await session.destroy();
});

test("a listener started again goes on where the last one stopped: no event twice", async () => {
  const session = await client.createSession({ sessionId: "relisten" });
  const seen: SessionEvent[] = [];
  for (const prompt of ["one", "two"]) {
    let idle!: () => void;
    const gotIdle = new Promise<void>((resolve) => (idle = resolve));
    const off = session.on((event) => {
      seen.push(event);
      if (event.type === "session.idle") idle();
    });
    await session.send(prompt);
    await gotIdle;
    await new Promise((resolve) => setTimeout(resolve, 200)); // what follows the idle event too
    off();
  }
  const ids = seen.map((e) => e.id);
  assert.equal(new Set(ids).size, ids.length, JSON.stringify(seen.map((e) => [e.type, e.id])));
  assert.deepEqual(
    seen.filter((e) => e.type === "user.message").map((e) => e.data.content),
    ["one", "two"],
  );
  await session.destroy();
});

test("sendAndWait resolves after the handlers had every event of the turn: nothing lost to destroy()", async () => {
  for (let round = 0; round < 20; round++) {
    const session = await client.createSession({ streaming: true });
    const deltas: string[] = [];
    const messages: string[] = [];
    session.on("assistant.message_delta", (event) => {
      deltas.push(String(event.data.deltaContent));
    });
    session.on("assistant.message", (event) => {
      messages.push(event.id);
    });
    const reply = await session.sendAndWait({ prompt: `round ${round}: stream every word of this to me` });
    const [gotDeltas, gotMessages] = [deltas.join(""), [...messages]]; // before anything else can run
    await session.destroy();
    assert.ok(deltas.length > 3, `round ${round}`);
    assert.equal(gotDeltas, reply.data.content, `round ${round}`);
    assert.deepEqual(gotMessages, [reply.id], `round ${round}`);
    await client.deleteSession(session.sessionId);
  }
});

test("bad input is a typed error and stores nothing", async () => {
  for (const bad of ["has space", "-dash-first", "x".repeat(129), "a:b"]) {
    const error = await client.createSession({ sessionId: bad }).then(
      () => assert.fail(`${bad} was accepted`),
      (e: unknown) => e,
    );
    assert.ok(error instanceof ValidationError && error instanceof APIError, String(error));
    assert.equal(error.status, 422);
    assert.equal(error.problem.status, 422);
  }
  await assert.rejects(client.createSession({ sessionId: "ok", labels: { "bad key!": "v" } }), ValidationError);
  await assert.rejects(client.createSession({ sessionId: "ok", ttlSeconds: 0 }), ValidationError);
  // An option the service does not know is refused before anything is sent.
  const local = await client
    .createSession({ sessionId: "ok", tools: [] } as unknown as Parameters<SessionClient["createSession"]>[0])
    .catch((e: unknown) => e);
  assert.ok(local instanceof ValidationError && local.status === 0, String(local));
  assert.deepEqual(await client.listSessions(), []);

  const session = await client.createSession({ sessionId: "ok" });
  const before = await session.getMessages();
  assert.deepEqual(before, []); // a new session's history is empty: session.start is a live event
  await assert.rejects(session.send({ prompt: "" }), (e: unknown) => e instanceof ValidationError && e.status === 422);
  for (const key of ["x".repeat(201), "line\nbreak", "caf\u00e9"]) {
    const refused = (e: unknown) => e instanceof ValidationError && e.status === 0;
    await assert.rejects(session.send("hi", { idempotencyKey: key }), refused, JSON.stringify(key));
  }
  await assert.rejects(client.createSession({ sessionId: "ok" }), ConflictError);
  assert.deepEqual(await session.getMessages(), before);
  await assert.rejects(client.resumeSession("missing"), SessionNotFoundError);
  await assert.rejects(client.deleteSession("a/b"), (e: unknown) => e instanceof ValidationError && e.status === 0);

  const stranger = new SessionClient({ baseUrl: server.url, apiKey: "sk_dev_wrong" });
  await assert.rejects(stranger.listSessions(), (e: unknown) => e instanceof AuthenticationError && e.status === 401);
});

test("storage-only sessions: items appended, read newest first or before an id, popped, cleared", async () => {
  const session = await client.createSession({ sessionId: "own-loop", mode: "store", labels: { app: "agents" } });
  assert.equal(session.metadata.mode, "store");
  assert.equal((await client.getSessionMetadata("own-loop")).mode, "store");
  assert.equal((await client.listSessions())[0]?.mode, "store");
  const turns = await client.createSession({ sessionId: "runs-turns" });
  assert.equal(turns.metadata.mode, "turns");

  const items = [
    { role: "user", content: "What's the weather in Paris?" },
    { type: "function_call", name: "weather", arguments: '{"city":"Paris"}', call_id: "c1" },
    { type: "function_call_output", call_id: "c1", output: "18C, sunny" },
    { role: "assistant", content: [{ type: "output_text", text: "18C and sunny." }] },
  ];
  interface FunctionCall { type: "function_call"; name: string; arguments: string; call_id: string }
  const call: FunctionCall = { type: "function_call", name: "weather", arguments: '{"city":"Paris"}', call_id: "c1" };
  const ids = await session.appendItems([...items.slice(0, 1), call, ...items.slice(2)]); // interface types too
  assert.equal(ids.length, 4);
  assert.equal(new Set(ids).size, 4);
  assert.deepEqual(await session.appendItems([]), []);
  assert.deepEqual(await session.getItems(), items);
  assert.deepEqual(await session.getItems({ limit: 2 }), items.slice(2));
  assert.deepEqual(await session.getItems({ before: ids[2] }), items.slice(0, 2));
  assert.deepEqual(await session.getItems({ before: ids[3], limit: 1 }), items.slice(2, 3));
  // items are history events of type `item`, with the same ids
  const events = await session.getEvents();
  assert.deepEqual(events.map((e) => [e.id, e.type, e.data]), ids.map((id, i) => [id, "item", items[i]]));

  assert.deepEqual(await session.popItem(), items[3]);
  assert.deepEqual(await session.getItems(), items.slice(0, 3));
  assert.equal(await session.clearItems(), 3);
  assert.deepEqual(await session.getItems(), []);
  assert.equal(await session.popItem(), undefined);
  assert.equal((await session.refresh()).labels.app, "agents"); // the session stays

  // a session runs turns or stores items, never both
  await assert.rejects(turns.appendItems(items), ConflictError);
  await assert.rejects(session.send("hello"), ConflictError);
  const local = (e: unknown): boolean => e instanceof ValidationError && e.status === 0;
  for (const bad of [["text"], [null], [[1]], { role: "user" }]) {
    await assert.rejects(session.appendItems(bad as never), local, JSON.stringify(bad));
  }
  for (const limit of [0, -1, 1.5]) await assert.rejects(session.getItems({ limit }), local, String(limit));
  await assert.rejects(
    client.createSession({ sessionId: "bad-mode", mode: "chat" as never }),
    (e: unknown) => e instanceof ValidationError && e.status === 422,
  );
  await client.deleteSession("own-loop");
  await assert.rejects(session.getItems(), SessionNotFoundError);
});

test("getEvents pages through every event, or the first `limit`, after / before / reverse included", async () => {
  const sizes: number[] = [];
  const recording: typeof fetch = async (input, init) => {
    const url = new URL(String(input));
    if (url.pathname.endsWith("/events")) sizes.push(Number(url.searchParams.get("limit")));
    return fetch(input, init);
  };
  const reader = new SessionClient({ baseUrl: server.url, apiKey: server.apiKey, fetch: recording });
  const session = await reader.createSession({ sessionId: "long-history", mode: "store" });
  const ids = await session.appendItems(Array.from({ length: 2_500 }, (_, n) => ({ n })));

  const all = await session.getEvents();
  assert.deepEqual(all.map((e) => e.id), ids);
  assert.deepEqual(sizes, [1000, 1000, 1000]); // the service's largest page
  assert.deepEqual((await session.getMessages()).map((e) => e.id), ids);
  sizes.length = 0;
  assert.deepEqual((await session.getEvents({ limit: 2_000 })).map((e) => e.id), ids.slice(0, 2_000));
  assert.deepEqual(sizes, [1000, 1000]);
  assert.deepEqual((await session.getEvents({ limit: 1_500, reverse: true })).map((e) => e.id), ids.slice(-1_500).reverse());
  const between = await session.getEvents({ after: ids[99], before: ids[2_300] });
  assert.deepEqual(between.map((e) => e.id), ids.slice(100, 2_300));
  const newestFirst = await session.getEvents({ before: ids[2_200], reverse: true, limit: 1_200 });
  assert.deepEqual(newestFirst.map((e) => e.id), ids.slice(1_000, 2_200).reverse());
  const oldestFirst = await session.getEvents({ after: ids[2_000], limit: 1_200 });
  assert.deepEqual(oldestFirst.map((e) => e.id), ids.slice(2_001));
  for (const limit of [0, -1, 2.5]) {
    await assert.rejects(session.getEvents({ limit }), (e: unknown) => e instanceof ValidationError && e.status === 0);
  }
  await reader.deleteSession("long-history");
});
