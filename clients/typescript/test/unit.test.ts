/** The pure parts: SSE framing, Retry-After, the retry decisions, id order, the mapping. */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import * as sessions from "redis-sessions-client";
import {
  APITimeoutError,
  type EventHandler,
  ProtocolError,
  RateLimitError,
  SessionClient,
  type SessionEvent,
  SessionNotFoundError,
  TurnError,
  ValidationError,
} from "redis-sessions-client";

import { errorFromResponse, retryAfterSeconds } from "#internal/errors.js";
import { compareIds, createBody, sessionMetadata } from "#internal/models.js";
import { Attempts } from "#internal/retry.js";
import { SSEDecoder, eventFromSSE, readEvents } from "#internal/sse.js";

import { REPO_ROOT } from "./harness.js";

test("SSE framing: fields, comments, multi-line data, the last id carried over", () => {
  const decoder = new SSEDecoder();
  const lines = ["retry: 2000", "", ": keepalive", "", "id: 1-0", "event: user.message", 'data: {"a":', "data:1}", "",
    "event: session.deleted", "data: {}", "", "data: plain", ""];
  const events = lines.map((line) => decoder.feed(line)).filter((e) => e !== undefined);
  assert.deepEqual(events, [
    { event: "user.message", data: '{"a":\n1}', id: "1-0" },
    { event: "session.deleted", data: "{}", id: "1-0" },
    { event: "message", data: "plain", id: "1-0" },
  ]);
});

test("readEvents splits chunks anywhere, CRLF included, and drops a cut event", async () => {
  const text = 'id: 5-1\r\nevent: x\r\ndata: {"id":"5-1","type":"x","data":{},"timestamp":"t"}\r\n\r\ndata: cut';
  const bytes = new TextEncoder().encode(text);
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      for (let i = 0; i < bytes.length; i += 7) controller.enqueue(bytes.slice(i, i + 7));
      controller.close();
    },
  });
  const got = [];
  for await (const sse of readEvents(body)) got.push(eventFromSSE(sse));
  assert.deepEqual(got, [{ id: "5-1", type: "x", data: {}, timestamp: "t" }]);
});

test("Retry-After as seconds or an HTTP date", () => {
  assert.equal(retryAfterSeconds(new Headers({ "retry-after": "3" })), 3);
  assert.equal(retryAfterSeconds(new Headers({ "retry-after": "-1" })), 0);
  assert.equal(retryAfterSeconds(new Headers()), undefined);
  assert.equal(retryAfterSeconds(new Headers({ "retry-after": "soon" })), undefined);
  const now = Date.parse("2024-11-22T03:28:00Z");
  assert.equal(retryAfterSeconds(new Headers({ "retry-after": "Fri, 22 Nov 2024 03:28:05 GMT" }), now), 5);
});

test("retry decisions: what may be repeated, Retry-After, the deadline", () => {
  let now = 1000;
  const clock = (): number => now;
  const create = new Attempts(false, { maxRetries: 5, deadline: 10_000 }, clock);
  assert.equal(create.afterStatus(502, new Headers()), undefined);
  assert.equal(create.afterError(new TypeError("fetch failed")), undefined);
  const refused = Object.assign(new TypeError("fetch failed"), { cause: { code: "ECONNREFUSED" } });
  assert.notEqual(create.afterError(refused), undefined);
  assert.equal(create.afterStatus(429, new Headers({ "retry-after": "1" })), 1000);

  const get = new Attempts(true, { maxRetries: 5, deadline: 10_000 }, clock);
  for (const status of [502, 503, 504]) assert.notEqual(get.afterStatus(status, new Headers()), undefined);
  assert.equal(get.afterStatus(500, new Headers()), undefined);
  now += 5000;
  assert.equal(get.afterStatus(503, new Headers({ "retry-after": "6" })), undefined);
  assert.equal(get.timeout(30_000), 5000);
  // a try whose timeout the deadline cut: its timeout stands for the answer before it, when
  // the call is repeatable or the try never left
  const timedOut = new TypeError("fetch failed");
  assert.ok(get.cut && get.cutShort(true, timedOut) && !get.cutShort(false, timedOut));
  assert.ok(!create.cutShort(true, timedOut)); // its timeout was not cut
  create.timeout(30_000);
  assert.ok(create.cut && !create.cutShort(true, timedOut) && create.cutShort(true, refused));
  now += 5000;
  assert.equal(get.remaining(), 0);
  assert.equal(get.timeout(1), 1);

  const bounded = new Attempts(true, { maxRetries: 2, deadline: null }, clock);
  const zero = new Headers({ "retry-after": "0" });
  assert.deepEqual([bounded.afterStatus(503, zero), bounded.afterStatus(503, zero), bounded.afterStatus(503, zero)], [0, 0, undefined]);
});

test("errors map by status; problem details are kept", () => {
  const body = JSON.stringify({ type: "/problems/bookmark-not-found", title: "Bookmark not found", status: 404, detail: "d" });
  const bookmark = errorFromResponse(404, new Headers(), body);
  assert.equal(bookmark.name, "NotFoundError");
  const session = errorFromResponse(404, new Headers(), JSON.stringify({ title: "Session not found", status: 404 }));
  assert.equal(session.name, "SessionNotFoundError");
  const html = errorFromResponse(502, new Headers(), "<html>bad gateway</html>");
  assert.equal(html.name, "InternalServerError");
  assert.match(html.message, /bad gateway/);
});

test("event ids order numerically", () => {
  assert.ok(compareIds("1700000000000-10", "1700000000000-9") > 0);
  assert.ok(compareIds("1700000000001-0", "1700000000000-99") > 0);
  assert.equal(compareIds("5-1", "5-1"), 0);
});

test("camelCase options map to the API's fields; unknown ones are refused", () => {
  assert.deepEqual(
    createBody({ sessionId: "s1", systemMessage: { mode: "append", content: "Be brief" }, infiniteSessions: true, ttlSeconds: 60 }),
    { session_id: "s1", system_message: "Be brief", infinite_sessions: true, ttl_seconds: 60 },
  );
  assert.deepEqual(createBody({ mode: "store" }), { mode: "store" });
  assert.throws(() => createBody({ tools: [] } as never), ValidationError);
  const meta = sessionMetadata({ session_id: "s", created_at: "2024-11-22T03:28:09Z", modified_at: "2024-11-22T03:30:00Z", summary: "" });
  assert.equal(meta.sessionId, "s");
  assert.equal(meta.modifiedTime.toISOString(), "2024-11-22T03:30:00.000Z");
  assert.equal("summary" in meta, false);
  assert.equal(meta.mode, "turns");
  assert.equal(sessionMetadata({ session_id: "s", mode: "store" }).mode, "store");
});

test("the base URL and key come from SESSIONS_URL / SESSIONS_API_KEY when not given", () => {
  const saved = { url: process.env.SESSIONS_URL, key: process.env.SESSIONS_API_KEY };
  try {
    process.env.SESSIONS_URL = "http://sessions.example:9000/";
    assert.equal(new SessionClient().baseUrl, "http://sessions.example:9000");
    assert.equal(new SessionClient({ baseUrl: "http://other:1" }).baseUrl, "http://other:1");
    delete process.env.SESSIONS_URL;
    assert.equal(new SessionClient().baseUrl, "http://127.0.0.1:8000");
  } finally {
    if (saved.url === undefined) delete process.env.SESSIONS_URL;
    else process.env.SESSIONS_URL = saved.url;
  }
});

/** A `fetch` that answers every request with `body` (a string as is, else its JSON; a function
 * of the request's method and URL for an answer per request) and records the URLs asked for. */
function answering(
  body: unknown,
  status = 200,
  type = "application/json",
): typeof fetch & { urls: string[] } {
  const urls: string[] = [];
  const stub = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    urls.push(String(input));
    const answer = typeof body === "function" ? body(init?.method ?? "GET", String(input)) : body;
    const text = typeof answer === "string" ? answer : JSON.stringify(answer);
    return new Response(status === 204 ? null : text, { status, headers: { "content-type": type } });
  };
  return Object.assign(stub, { urls });
}

const SESSION = { session_id: "s1", created_at: "2024-11-22T03:28:09Z", modified_at: "2024-11-22T03:28:09Z" };

test("a full quota's 429 is thrown at once; a rate limit's is retried", async () => {
  const quota = { title: "Limit exceeded", status: 429, detail: "tenant already holds 2 sessions", limit: "sessions" };
  const full = answering(quota, 429, "application/problem+json");
  const client = new SessionClient({ baseUrl: "http://sessions.test", fetch: full, maxRetries: 3 });
  await assert.rejects(client.createSession(), RateLimitError);
  assert.equal(full.urls.length, 1);
  const rate = answering({ ...quota, limit: "requests" }, 429, "application/problem+json");
  const retried = new SessionClient({ baseUrl: "http://sessions.test", fetch: rate, maxRetries: 1 });
  await assert.rejects(retried.createSession(), RateLimitError);
  assert.equal(rate.urls.length, 2);
});

test("on(type, handler) refuses an event type that is not a string at once", async () => {
  const client = new SessionClient({ baseUrl: "http://sessions.test", fetch: answering(SESSION) });
  const session = await client.createSession();
  const handler: EventHandler = () => undefined;
  for (const type of [123, null, { type: "x" }, handler]) {
    assert.throws(() => session.on(type as unknown as string, handler), TypeError, String(type));
  }
  assert.equal(session.listening, false);
  await session.destroy();
});

test("listSessions refuses a limit or page size that is not a whole number of at least 1", async () => {
  const fetch = answering({ data: [SESSION], next_cursor: null });
  const client = new SessionClient({ baseUrl: "http://sessions.test", fetch });
  const local = (e: unknown): boolean => e instanceof ValidationError && e.status === 0;
  for (const limit of [0, -1, Number.NaN, 2.5, Number.POSITIVE_INFINITY, "3" as unknown as number]) {
    await assert.rejects(client.listSessions({ limit }), local, String(limit));
  }
  for (const pageSize of [0, -5, 1.5]) await assert.rejects(client.listSessions({ pageSize }), local, String(pageSize));
  assert.deepEqual(fetch.urls, []); // nothing was sent
  assert.equal((await client.listSessions({ limit: 1 })).length, 1);
  assert.equal(await client.getLastSessionId(), "s1");
});

test("an option the client does not know is refused before anything is sent, by every call that takes options", async () => {
  // a misspelt filter is not dropped: listSessions({ lables }) would list every session (and
  // a cleanup loop over it delete them)
  const fetch = answering({ data: [SESSION], next_cursor: null, ...SESSION });
  const local = (e: unknown): boolean => e instanceof ValidationError && e.status === 0 && /unknown/.test(e.message);
  assert.throws(() => new SessionClient({ baseURL: "http://sessions.test" } as never), local);
  const client = new SessionClient({ baseUrl: "http://sessions.test", fetch });
  const session = await client.createSession();
  fetch.urls.length = 0;
  const lables = { lables: { app: "a" } } as never;
  await assert.rejects(client.listSessions(lables), local);
  await assert.rejects(client.iterSessions(lables).next(), local);
  await assert.rejects(client.createSession({ tools: [] } as never), local);
  await assert.rejects(client.resumeSession("s1", { ttl: 60 } as never), local);
  await assert.rejects(session.send("hi", { idempotency_key: "k" } as never), local);
  await assert.rejects(session.send({ prompt: "hi", attachments: [] } as never), local);
  await assert.rejects(session.getEvents({ since: "1-0" } as never), local);
  await assert.rejects(session.getItems({ after: "1-0" } as never), local);
  await assert.rejects(session.update({ ttl: 60 } as never), local);
  assert.deepEqual(fetch.urls, []); // nothing was sent
  // the known ones still work, and an absent options object is none
  assert.equal((await client.listSessions({ labels: { app: "a" }, limit: 1, pageSize: 5 })).length, 1);
  assert.equal((await client.listSessions(undefined)).length, 1);
});

test("sendAndWait refuses a timeout it cannot keep, and a bad idempotencyKey, before anything is sent", async () => {
  const fetch = answering(SESSION);
  const session = await new SessionClient({ baseUrl: "http://sessions.test", fetch }).createSession();
  fetch.urls.length = 0;
  const local = (e: unknown): boolean => e instanceof ValidationError && e.status === 0;
  // (a timer longer than 2^31 - 1 ms fires after 1 ms in Node)
  for (const timeout of [0, -1, Number.NaN, Number.POSITIVE_INFINITY, 2_147_483_648, "100", null]) {
    await assert.rejects(session.sendAndWait("hi", timeout as never), local, String(timeout));
  }
  for (const key of ["x".repeat(201), "line\nbreak"]) {
    await assert.rejects(session.sendAndWait("hi", 1000, { idempotencyKey: key }), local, key);
  }
  await assert.rejects(session.sendAndWait("hi", 1000, { idempotency_key: "k" } as never), local);
  assert.deepEqual(fetch.urls, []); // nothing was sent
});

test("a base URL that is not http(s) is refused when the client is made, not retried as an outage", () => {
  for (const baseUrl of ["127.0.0.1:8000", "sessions:8000", "localhost", "ftp://sessions:21", "", "/v1"]) {
    assert.throws(
      () => new SessionClient({ baseUrl }),
      (e: unknown) => e instanceof ValidationError && e.status === 0 && /http:\/\/ or https:\/\//.test(e.message),
      JSON.stringify(baseUrl),
    );
  }
  assert.equal(new SessionClient({ baseUrl: "https://sessions.example/base/" }).baseUrl, "https://sessions.example/base");
});

test("a 200 answer that is not JSON, or not the shape the API gives, is a ProtocolError", async () => {
  const protocol = (e: unknown): boolean => e instanceof ProtocolError && e.status === 200;
  for (const body of ["<html>sign in</html>", "{\"data\": [", "", {}, [], { data: {} }, { data: [1, 2] }, null]) {
    const client = new SessionClient({ baseUrl: "http://sessions.test", fetch: answering(body) });
    await assert.rejects(client.listSessions(), protocol, JSON.stringify(body));
    await assert.rejects(client.createSession(), protocol, JSON.stringify(body));
    await assert.rejects(client.getSessionMetadata("s1"), protocol, JSON.stringify(body));
  }
  const client = new SessionClient({
    baseUrl: "http://sessions.test",
    fetch: answering((method: string, url: string) => (method === "POST" && url.endsWith("/v1/sessions") ? SESSION : {})),
  });
  const session = await client.createSession();
  await assert.rejects(session.send("hi"), protocol);
  await assert.rejects(session.getEvents(), protocol);
  await assert.rejects(session.getConversation(), protocol);
  await assert.rejects(session.getBookmarks(), protocol);
  await assert.rejects(session.refresh(), protocol);
  await assert.rejects(session.abort(), protocol);
});

test("a redirect is a ProtocolError at once: fetch is asked not to follow it, and a browser's opaque one is refused", async () => {
  const modes: Array<RequestRedirect | undefined> = [];
  // what a browser's fetch gives for a redirect with redirect: "manual" (its status, 0, and
  // headers hidden); Node's fetch cannot make one
  const opaque = async (_input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    modes.push(init?.redirect);
    return Object.defineProperties(new Response(null), {
      type: { value: "opaqueredirect" },
      status: { value: 0 },
      ok: { value: false },
    });
  };
  const client = new SessionClient({ baseUrl: "http://sessions.test", fetch: opaque, maxRetries: 3 });
  const refused = (e: unknown): boolean => e instanceof ProtocolError && e.status === 0 && /redirect/.test(e.message);
  await assert.rejects(client.getSessionMetadata("s1"), refused);
  await assert.rejects(client.createSession(), refused);
  assert.deepEqual(modes, ["manual", "manual"]); // one try each
});

test("getItems reads the newest items page by page (10,000 at most), oldest first", async () => {
  const stored = Array.from({ length: 12_345 }, (_, n) => ({ n }));
  const ids = stored.map((_, n) => `${1000 + n}-${n}`);
  const fetch = answering((method: string, url: string) => {
    if (method === "POST") return SESSION;
    const query = new URL(url).searchParams;
    const end = query.has("before") ? ids.indexOf(query.get("before") ?? "") : stored.length;
    const start = Math.max(0, end - Number(query.get("limit") ?? 10_000));
    return { data: stored.slice(start, end), ids: ids.slice(start, end) };
  });
  const session = await new SessionClient({ baseUrl: "http://sessions.test", fetch }).createSession();
  fetch.urls.length = 0;
  assert.deepEqual(await session.getItems(), stored);
  assert.deepEqual(fetch.urls.map((url) => new URL(url).search), ["?limit=10000", `?limit=10000&before=${ids[2345]}`]);
  assert.deepEqual(await session.getItems({ limit: 10_001 }), stored.slice(-10_001));
  assert.deepEqual(await session.getItems({ limit: 3, before: ids[10] }), stored.slice(7, 10));
});

/** A service played by the test: a session, sends answered (with the next message id) when the
 * test says, and event streams it writes to, or answers with an HTML page once `html` is set. */
function scripted() {
  const streams: Array<{ url: string; write: (id: string, type: string, data?: object) => void; end: () => void }> = [];
  const sends: Array<() => string> = [];
  const state = { html: false };
  const stored: object[] = []; // what GET .../events answers
  let messages = 0;
  const stub = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const url = String(input);
    const json = (body: unknown): Response =>
      new Response(JSON.stringify(body), { headers: { "content-type": "application/json" } });
    if (url.includes("/events/stream")) {
      if (state.html) return new Response("<html>sign in</html>", { headers: { "content-type": "text/html" } });
      let write!: (id: string, type: string, data?: object) => void;
      let end!: () => void;
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          end = () => controller.close();
          write = (id, type, data = {}) => {
            const event = { id, type, data, timestamp: "2024-11-22T03:28:09Z" };
            controller.enqueue(new TextEncoder().encode(`id: ${id}\nevent: ${type}\ndata: ${JSON.stringify(event)}\n\n`));
          };
          init?.signal?.addEventListener("abort", () => controller.error(init.signal?.reason));
        },
      });
      streams.push({ url, write, end });
      return new Response(body, { headers: { "content-type": "text/event-stream" } });
    }
    if (url.includes("/events?")) return json({ data: stored });
    if (url.endsWith("/messages") && init?.method === "POST") {
      return new Promise((resolve) => sends.push(() => {
        const id = `${++messages}0-0`;
        resolve(json({ message_id: id }));
        return id;
      }));
    }
    return json(SESSION);
  };
  return { fetch: stub as typeof fetch, streams, sends, state, stored };
}

const WAIT = 5_000; // ms a turn of the scripted service may take

/** Until `check()` holds (a few seconds at most). */
async function until(check: () => boolean): Promise<void> {
  for (let tries = 0; !check(); tries++) {
    assert.ok(tries < 2000, "waited in vain");
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

test("sendAndWait with handlers: the listener settles it, a reply that beat the send's answer included", async () => {
  const service = scripted();
  const session = await new SessionClient({ baseUrl: "http://sessions.test", fetch: service.fetch }).createSession();
  const seen: string[] = [];
  session.on((event) => {
    seen.push(event.type);
  });
  await until(() => service.streams.length === 1);
  const [listener] = service.streams;
  const replies = [session.sendAndWait("first", WAIT), session.sendAndWait("second", WAIT)];
  await until(() => service.sends.length === 2);
  // the second turn ends before its send is answered, the first after
  assert.equal(service.sends[0]?.(), "10-0");
  listener?.write("10-0", "user.message");
  listener?.write("20-0", "user.message");
  listener?.write("L1", "assistant.message_delta", { deltaContent: "two" });
  listener?.write("21-0", "assistant.message", { reply_to: "20-0", content: "two" });
  await until(() => seen.length === 4);
  assert.equal(service.sends[1]?.(), "20-0");
  listener?.write("22-0", "assistant.message", { reply_to: "10-0", content: "one" });
  const [one, two] = await Promise.all(replies);
  assert.equal(one?.data.content, "one");
  assert.equal(two?.data.content, "two");
  assert.deepEqual(seen, ["user.message", "user.message", "assistant.message_delta", "assistant.message", "assistant.message"]);
  assert.equal(service.streams.length, 1); // no stream of their own

  // an abort that beat the send's answer, then a deletion while waiting
  const aborted = session.sendAndWait("third", WAIT).catch((e: unknown) => e);
  await until(() => service.sends.length === 3);
  listener?.write("31-0", "abort");
  await until(() => seen.length === 6);
  assert.equal(service.sends[2]?.(), "30-0");
  const turnError = await aborted;
  assert.ok(turnError instanceof TurnError && turnError.event.id === "31-0", String(turnError));
  const deleted = session.sendAndWait("fourth", WAIT).catch((e: unknown) => e);
  await until(() => service.sends.length === 4);
  service.sends[3]?.();
  await new Promise((resolve) => setTimeout(resolve, 20));
  listener?.write("41-0", "session.deleted");
  assert.ok((await deleted) instanceof SessionNotFoundError);
  assert.equal(service.streams.length, 1);
  await session.destroy();
});

test("sendAndWait with handlers: its timeout, and a listener that stops or fails while it waits", async () => {
  const service = scripted();
  const client = new SessionClient({ baseUrl: "http://sessions.test", fetch: service.fetch, maxRetries: 0 });
  const session = await client.createSession();
  session.on(() => undefined);
  await until(() => service.streams.length === 1);
  const late = session.sendAndWait("nobody answers", 50).catch((e: unknown) => e);
  await until(() => service.sends.length === 1);
  service.sends[0]?.();
  const timedOut = await late;
  assert.ok(timedOut instanceof APITimeoutError && timedOut.message.includes("10-0"), String(timedOut));
  assert.equal(timedOut.messageId, "10-0"); // the send answered: a wait sent again with its key finds it
  assert.match(timedOut.idempotencyKey ?? "", /^[0-9a-f]{32}$/);

  // torn down while waiting: the wait goes on over its own stream, from the message on
  const waiting = session.sendAndWait("second", WAIT);
  await until(() => service.sends.length === 2);
  const second = service.sends[1]?.() ?? "";
  await new Promise((resolve) => setTimeout(resolve, 20));
  await session.destroy();
  await until(() => service.streams.length === 2);
  assert.match(service.streams[1]?.url ?? "", new RegExp(`after=${second}`));
  service.streams[1]?.write("21-0", "assistant.message", { reply_to: second, content: "two" });
  assert.equal((await waiting).data.content, "two");

  // a listener that fails: its error, not a hang until the timeout
  const again = await client.resumeSession("s1");
  again.on(() => undefined);
  await until(() => service.streams.length === 3);
  const failing = again.sendAndWait("third", WAIT).catch((e: unknown) => e);
  await until(() => service.sends.length === 3);
  service.sends[2]?.();
  await new Promise((resolve) => setTimeout(resolve, 20));
  service.state.html = true; // the stream drops, and where it is reopened answers a sign-in page
  const warn = console.warn;
  console.warn = () => undefined;
  try {
    service.streams[2]?.end();
    assert.ok((await failing) instanceof ProtocolError);
  } finally {
    console.warn = warn;
  }
  assert.equal(again.listening, false);
  await again.destroy();
});

test("sendAndWait with handlers: one called from a handler, and handlers slower than the timeout", async () => {
  const service = scripted();
  const session = await new SessionClient({ baseUrl: "http://sessions.test", fetch: service.fetch }).createSession();
  let followUp: Promise<SessionEvent> | undefined;
  let release = (): void => undefined;
  const gated = new Set(["30-0", "40-0"]); // their handlers are slower than the caller's timeout
  const handled = new Set<string>();
  session.on("assistant.message", async (event) => {
    if (event.data.reply_to === "10-0") followUp = session.sendAndWait("follow-up", WAIT); // not awaited here
    if (event.data.reply_to === "10-0") await followUp; // waits on a stream of its own
    if (gated.has(String(event.data.reply_to))) {
      await new Promise<void>((resolve) => (release = resolve));
      handled.add(String(event.data.reply_to));
    }
  });
  await until(() => service.streams.length === 1);
  const [listener] = service.streams;
  const first = session.sendAndWait("first", WAIT);
  await until(() => service.sends.length === 1);
  assert.equal(service.sends[0]?.(), "10-0");
  listener?.write("11-0", "assistant.message", { reply_to: "10-0", content: "one" });
  await until(() => service.sends.length === 2);
  assert.equal(service.sends[1]?.(), "20-0");
  await until(() => service.streams.length === 2); // the follow-up's own stream
  assert.match(service.streams[1]?.url ?? "", /after=20-0/);
  service.streams[1]?.write("21-0", "assistant.message", { reply_to: "20-0", content: "two" });
  assert.equal((await first).data.content, "one");
  assert.equal((await (followUp as Promise<SessionEvent>)).data.content, "two");

  // the answer came in time, the handlers still run at the timeout: the answer, not a timeout
  // (whether it came before or after the send's own answer)
  for (const [early, id] of [[true, "30-0"], [false, "40-0"]] as const) {
    const answer = session.sendAndWait("slow", 200);
    await until(() => service.sends.length === (early ? 3 : 4));
    if (early) listener?.write("31-0", "assistant.message", { reply_to: id, content: id });
    assert.equal(service.sends.at(-1)?.(), id);
    await new Promise((resolve) => setTimeout(resolve, 20));
    if (!early) listener?.write("41-0", "assistant.message", { reply_to: id, content: id });
    assert.equal((await answer).data.content, id);
    release();
    await until(() => handled.has(id)); // the listener is done with it
  }
  await session.destroy();
});

test("a wait that finds its answer stored at its timeout lets slow handlers have the turn first", async () => {
  const service = scripted();
  const session = await new SessionClient({ baseUrl: "http://sessions.test", fetch: service.fetch }).createSession();
  const handled: string[] = [];
  let release = (): void => undefined;
  session.on(async (event) => {
    if (event.type === "assistant.message_delta") await new Promise<void>((resolve) => (release = resolve));
    handled.push(event.type);
  });
  await until(() => service.streams.length === 1);
  const [listener] = service.streams;
  const answer = session.sendAndWait("slow handlers", 100);
  await until(() => service.sends.length === 1);
  assert.equal(service.sends[0]?.(), "10-0");
  const reply = { reply_to: "10-0", content: "hi" };
  listener?.write("L11-0", "assistant.message_delta", { deltaContent: "hi" });
  listener?.write("12-0", "assistant.message", reply);
  service.stored.push({ id: "12-0", type: "assistant.message", data: reply, timestamp: "2024-11-22T03:28:09Z" });
  let settled = false;
  void answer.then(() => (settled = true));
  await new Promise((resolve) => setTimeout(resolve, 300)); // past the timeout and the look
  assert.equal(settled, false); // the handlers still have the delta: the reply is on its way
  release();
  assert.equal((await answer).data.content, "hi");
  assert.deepEqual(handled, ["assistant.message_delta", "assistant.message"]);
  await session.destroy();
});

test("the READMEs say what the code does: the error tree, and delta handlers that can fire", () => {
  const [main = "", own = ""] = ["README.md", "clients/typescript/README.md"].map((path) =>
    readFileSync(join(REPO_ROOT, path), "utf8"),
  );
  // what the service's README lists under APIConnectionError are its subclasses
  const listed = /`APIConnectionError` ⊃ ([^;.]*)/.exec(main)?.[1] ?? "";
  const names = [...listed.matchAll(/`(\w+)`/g)].map((match) => match[1] ?? "");
  assert.ok(names.length > 0, "no error tree under APIConnectionError");
  for (const name of names) {
    const error = (sessions as Record<string, unknown>)[name] as { prototype: unknown } | undefined;
    assert.ok(error?.prototype instanceof sessions.APIConnectionError, `${name} is not an APIConnectionError`);
  }
  // deltas come to a handler registered before the turn, of a session created streaming
  for (const readme of [main, own]) {
    const snippets = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((match) => match[1] ?? "");
    const streaming = snippets.filter((code) => code.includes('on("assistant.message_delta"'));
    assert.ok(streaming.length > 0);
    for (const code of streaming) {
      const on = code.indexOf('on("assistant.message_delta"');
      assert.match(code.slice(0, on), /createSession\(\{[^}]*streaming: true/, code);
      assert.ok(on < code.search(/\.send(AndWait)?\(/), code);
    }
  }
});
