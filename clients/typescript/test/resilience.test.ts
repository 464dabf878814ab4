/** Through a proxy in front of a real `sessionctl dev`: 502 retries of repeatable calls only,
 * event streams resumed with Last-Event-ID after a cut, and an HTML page where an event stream
 * belongs refused clearly. */

import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";

import {
  APITimeoutError,
  type ClientOptions,
  InternalServerError,
  ProtocolError,
  type SessionEvent,
  SessionClient,
} from "redis-sessions-client";

import { BAD_GATEWAY, type DevServer, type Failure, Proxy, startDevServer } from "./harness.js";

let server: DevServer;
let proxy: Proxy;

before(async () => {
  server = await startDevServer();
});
after(async () => {
  await server?.stop();
});
afterEach(async () => {
  await proxy?.stop();
});

async function through(setup: (p: Proxy) => void, options: ClientOptions = {}): Promise<SessionClient> {
  proxy = new Proxy(server.url);
  setup(proxy);
  await proxy.start();
  return new SessionClient({ baseUrl: proxy.url, apiKey: server.apiKey, backoffBaseMs: 10, ...options });
}

/** Answers 502 to the first request of each kind `which` selects. */
function onceEach(which: (method: string, url: string) => string | undefined) {
  const failed = new Set<string>();
  return (req: { method?: string; url?: string }) => {
    const kind = which(req.method ?? "", req.url ?? "");
    if (kind === undefined || failed.has(kind)) return undefined;
    failed.add(kind);
    return BAD_GATEWAY;
  };
}

test("a 502 is retried for repeatable calls, sends included, and not for a create", async () => {
  const client = await through((p) => {
    p.fail = onceEach((method, url) => {
      if (method === "GET" && url.startsWith("/v1/sessions?")) return "list";
      if (method === "POST" && url.endsWith("/messages")) return "send";
      if (method === "DELETE") return "delete";
      if (method === "POST" && url === "/v1/sessions") return "create";
      return undefined;
    });
  });
  const refused = await client.createSession({ sessionId: "retried" }).catch((e: unknown) => e);
  assert.ok(refused instanceof InternalServerError && refused.status === 502, String(refused));
  assert.deepEqual(await client.listSessions(), []); // one 502 then the answer: nothing made

  const session = await client.createSession({ sessionId: "retried" });
  const reply = await session.sendAndWait({ prompt: "only once please" });
  assert.match(String(reply.data.content), /only once please/);
  const sends = proxy.seen.filter((s) => s.method === "POST" && s.url.endsWith("/messages"));
  assert.deepEqual(
    sends.map((s) => s.status),
    [502, 202],
  );
  assert.equal(sends[0]?.headers["idempotency-key"], sends[1]?.headers["idempotency-key"]);
  const users = (await session.getMessages()).filter((e) => e.type === "user.message");
  assert.equal(users.length, 1);

  await client.deleteSession("retried");
  const deletes = proxy.seen.filter((s) => s.method === "DELETE");
  assert.deepEqual(
    deletes.map((s) => s.status),
    [502, 204],
  );
});

test("a cut event stream resumes with Last-Event-ID: every event once, in order", async () => {
  let streams = 0;
  const client = await through((p) => {
    p.cutAfter = (req) => {
      if (!req.url?.includes("/events/stream")) return undefined;
      streams += 1;
      return streams === 1 ? 3 : undefined;
    };
  });
  const session = await client.createSession({ sessionId: "cut", streaming: true });
  after(() => session.destroy());
  const seen: SessionEvent[] = [];
  let idle!: () => void;
  const done = new Promise<void>((resolve) => (idle = resolve));
  session.on((event) => {
    seen.push(event);
    if (event.type === "session.idle") idle();
  });
  await session.send({ prompt: "a reply long enough to stream in several deltas" });
  await done;
  const requests = proxy.seen.filter((s) => s.url.includes("/events/stream"));
  assert.equal(requests.length, 2);
  // a new session has no durable event yet: the first stream starts from the beginning
  assert.equal(session.metadata.lastEventId, "");
  assert.equal(requests[0]?.headers["last-event-id"], undefined);
  // The second stream starts after the last event the first one delivered (at least 3).
  const resumedFrom = requests[1]?.headers["last-event-id"];
  assert.ok(seen.findIndex((e) => e.id === resumedFrom) >= 2, String(resumedFrom));
  assert.ok(requests[1]?.url.includes(`after=${encodeURIComponent(String(resumedFrom))}`));
  // every durable event reached the handler once, in the stored order (the live-only ones,
  // turn markers and deltas, are not in the history)
  const stored = (await session.getMessages()).map((e) => e.id);
  const storedIds = new Set(stored);
  assert.deepEqual(seen.map((e) => e.id).filter((id) => storedIds.has(id)), stored);
  assert.equal(new Set(seen.map((e) => e.id)).size, seen.length); // none twice, no id shared
  assert.deepEqual(
    seen.filter((e) => e.type.endsWith(".message")).map((e) => e.type),
    ["user.message", "assistant.message"],
  );
  await session.destroy();
  await client.deleteSession("cut");
});

test("a resume from past the live window re-reads the history: no durable event lost or repeated", async () => {
  let streams = 0;
  const client = await through((p) => {
    p.cutAfter = (req) => {
      if (!req.url?.includes("/events/stream")) return undefined;
      streams += 1;
      if (streams === 1) return 2;
      // the reconnect asks for a live id long gone from the window: the service answers
      // session.resync, and the client must catch up from the history itself
      req.headers["last-event-id"] = "L1-0";
      req.url = req.url.replace(/after=[^&]*/, "after=L1-0");
      return undefined;
    };
  });
  const session = await client.createSession({ sessionId: "resync", streaming: true });
  after(() => session.destroy());
  const seen: SessionEvent[] = [];
  let idle!: () => void;
  const done = new Promise<void>((resolve) => (idle = resolve));
  session.on((event) => {
    seen.push(event);
    if (event.type === "assistant.message") idle();
  });
  await session.send({ prompt: "a reply long enough to stream in several deltas" });
  await done;
  assert.equal(streams, 2);
  assert.ok(!seen.some((e) => e.type === "session.resync"));
  const stored = (await session.getMessages()).map((e) => e.id);
  const storedIds = new Set(stored);
  assert.deepEqual(seen.map((e) => e.id).filter((id) => storedIds.has(id)), stored);
  await session.destroy();
  await client.deleteSession("resync");
});

test("a listener started again past the live window catches up once: nothing twice, nothing lost", async () => {
  let stale = false; // a stream's cursor as if the live window had moved past it
  let failRead = false; // the next history read fails (the listener stops)
  const client = await through((p) => {
    p.rewrite = (req) => {
      if (stale && req.url?.includes("/events/stream") && String(req.headers["last-event-id"] ?? "").startsWith("L")) {
        req.headers["last-event-id"] = "L1-0";
        req.url = req.url.replace(/after=[^&]*/, "after=L1-0");
      }
    };
    p.fail = (req) => {
      if (!failRead || req.method !== "GET" || !/\/events\?/.test(req.url ?? "")) return undefined;
      failRead = false;
      return { status: 403, type: "application/problem+json", body: '{"title":"Forbidden","status":403}' };
    };
  });
  const session = await client.createSession({ sessionId: "relisten-stale" });
  const seen: SessionEvent[] = [];
  const listen = async (prompt: string | undefined): Promise<void> => {
    let idle!: () => void;
    const gotIdle = new Promise<void>((resolve) => (idle = resolve));
    const off = session.on((event) => {
      seen.push(event);
      if (event.type === "session.idle") idle();
    });
    if (prompt !== undefined) {
      await session.send(prompt);
      await gotIdle;
    }
    // what follows the idle event comes through too; without a prompt, the listener's catch-up
    // read fails and it stops
    for (let waited = 0; waited < 300 || (prompt === undefined && session.listening); waited += 10) {
      assert.ok(waited < 10_000, "the listener did not stop");
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    off();
  };
  await listen("one");
  const other = await client.resumeSession("relisten-stale");
  await other.sendAndWait("two"); // while no listener runs
  await other.destroy();
  stale = true;
  failRead = true;
  const warned: unknown[][] = [];
  const warn = console.warn;
  console.warn = (...args: unknown[]) => void warned.push(args);
  try {
    await listen(undefined); // resync; its catch-up read fails and the listener stops
  } finally {
    console.warn = warn;
  }
  assert.equal(failRead, false);
  // the stop is told, with its cause
  const [message, cause] = warned.length === 1 ? (warned[0] ?? []) : [];
  assert.match(String(message), /listener of session relisten-stale stopped/);
  assert.equal((cause as Error | undefined)?.name, "AuthenticationError");
  await listen("three"); // resync again: the catch-up brings "two", not "one" again
  const said = seen.filter((e) => e.type === "user.message").map((e) => e.data.content);
  assert.deepEqual(said, ["one", "two", "three"]);
  const durable = seen.filter((e) => !e.id.startsWith("L")).map((e) => e.id);
  assert.equal(new Set(durable).size, durable.length, JSON.stringify(seen.map((e) => [e.type, e.id])));
  await session.destroy();
  await client.deleteSession("relisten-stale");
});

test("a wait whose reply never came live finds it stored, at its timeout", async () => {
  // as when a process dies between writing a reply and publishing its live copy (on a Redis
  // Cluster the two are written apart): the stream never brings the reply
  const client = await through((p) => {
    p.dropFrame = (frame) => frame.includes("event: assistant.message\n");
  });
  const session = await client.createSession({ sessionId: "lost-copy" });
  const started = Date.now();
  const reply = await session.sendAndWait("are you there?", 1000);
  assert.equal(reply.type, "assistant.message");
  assert.match(String(reply.data.content), /are you there\?/);
  assert.ok(Date.now() - started >= 1000);
  await session.destroy();
  await client.deleteSession("lost-copy");
});

test("an HTML page where the event stream belongs is a ProtocolError, not a silent retry", async () => {
  const client = await through((p) => {
    p.fail = (req) =>
      req.url?.includes("/events/stream")
        ? { status: 200, type: "text/html", body: "<!doctype html><title>Sign in</title>" }
        : undefined;
  });
  const session = await client.createSession({ sessionId: "misrouted" });
  const error = await session.sendAndWait({ prompt: "hello" }, 10_000).catch((e: unknown) => e);
  assert.ok(error instanceof ProtocolError, String(error));
  assert.match(error.message, /text\/html/);
  assert.match(error.message, /Sign in/);
  assert.equal(proxy.seen.filter((s) => s.url.includes("/events/stream")).length, 1);
  await client.deleteSession("misrouted");
});

test("a redirect is a ProtocolError, neither followed nor retried: reads, sends and event streams", async () => {
  // a proxy that sends one session's requests to another's: following it would answer for the
  // wrong session (or store a prompt in it)
  const moved = (status: number, location: string): Failure => ({
    status,
    type: "text/html",
    body: "<html>moved</html>",
    headers: { location },
  });
  const client = await through((p) => {
    p.fail = (req) => {
      const url = req.url ?? "";
      if (req.method === "GET" && url === "/v1/sessions/red-a") return moved(302, "/v1/sessions/red-b");
      if (req.method === "POST" && url === "/v1/sessions/red-a/messages") return moved(307, "/v1/sessions/red-b/messages");
      if (url.startsWith("/v1/sessions/red-b/events/stream")) return moved(302, url.replace("red-b", "red-a"));
      return undefined;
    };
  });
  const a = await client.createSession({ sessionId: "red-a" });
  const b = await client.createSession({ sessionId: "red-b" });
  const redirect = (status: number) => (e: unknown) => e instanceof ProtocolError && e.status === status && /redirect/.test(e.message);

  await assert.rejects(client.resumeSession("red-a"), redirect(302));
  await assert.rejects(a.send("to a only"), redirect(307));
  await assert.rejects(b.sendAndWait("hello", 5_000), redirect(302));

  const asked = (method: string, path: string): number =>
    proxy.seen.filter((s) => s.method === method && s.url.split("?")[0] === path).length;
  assert.equal(asked("GET", "/v1/sessions/red-a"), 1); // not retried
  assert.equal(asked("POST", "/v1/sessions/red-a/messages"), 1);
  assert.equal(asked("GET", "/v1/sessions/red-b/events/stream"), 1);
  assert.equal(asked("GET", "/v1/sessions/red-b"), 0); // not followed
  assert.equal(asked("POST", "/v1/sessions/red-b/messages"), 1); // b's own send only
  assert.equal(asked("GET", "/v1/sessions/red-a/events/stream"), 0);
  const said = async (s: typeof a) => (await s.getMessages()).filter((e) => e.type === "user.message").map((e) => e.data.content);
  assert.deepEqual(await said(b), ["hello"]);
  assert.deepEqual(await said(a), []);
  await client.deleteSession("red-a");
  await client.deleteSession("red-b");
});

test("retries stop at the call's deadline", async () => {
  proxy = new Proxy(server.url);
  proxy.fail = () => ({ status: 503, type: "application/problem+json", body: '{"title":"Unavailable","status":503}' });
  await proxy.start();
  const client = new SessionClient({ baseUrl: proxy.url, apiKey: server.apiKey, deadline: 500, maxRetries: 1000 });
  const started = Date.now();
  const error = await client.listSessions().catch((e: unknown) => e);
  assert.ok(error instanceof InternalServerError && error.status === 503, String(error));
  assert.ok(Date.now() - started < 2_000);
  assert.ok(proxy.seen.length > 1 && proxy.seen.length < 50, String(proxy.seen.length));

  // a retry the deadline cuts short: the call fails with the service's last answer, its 503
  const heldFrom = proxy.seen.length;
  proxy.hold = () => proxy.seen.length > heldFrom;
  const cut = await client.listSessions().catch((e: unknown) => e);
  assert.ok(cut instanceof InternalServerError && cut.status === 503, String(cut));
  assert.equal(proxy.seen[heldFrom + 1]?.status, 0); // the held retry

  // a create answered 429 (refused, nothing done) whose retry reaches the service and is never
  // answered: the create may have happened, so the error is the timeout, not that 429
  const createsFrom = proxy.seen.length;
  proxy.fail = () => ({ status: 429, type: "application/problem+json", body: '{"title":"Slow down","status":429}' });
  proxy.hold = () => proxy.seen.length > createsFrom;
  const create = await client.createSession({ sessionId: "maybe" }).catch((e: unknown) => e);
  assert.ok(create instanceof APITimeoutError, String(create));
  assert.equal(proxy.seen.length, createsFrom + 2);
  proxy.hold = () => false;

  const waiting = new SessionClient({ baseUrl: server.url, apiKey: server.apiKey });
  const session = await waiting.createSession({ sessionId: "deadline" });
  await session.abort(); // nothing pending: false, but the call works
  const timedOut = await session.sendAndWait("x", 1).catch((e: unknown) => e);
  assert.ok(timedOut instanceof APITimeoutError, String(timedOut));
  await waiting.deleteSession("deadline");
});

test("sendAndWait's timeout bounds the send too: a hung send ends at it, not at the deadline", async () => {
  // the client's own bounds are far longer than the wait
  const client = await through(
    (p) => (p.hold = (req) => req.method === "POST" && req.url?.endsWith("/messages") === true),
    { timeout: 2_000, deadline: 4_000 },
  );
  const session = await client.createSession({ sessionId: "hung-send" });
  const started = Date.now();
  const error = await session.sendAndWait("hello", 300).catch((e: unknown) => e);
  const took = Date.now() - started;
  assert.ok(error instanceof APITimeoutError, String(error));
  assert.match(error.message, /within 300 ms/);
  assert.ok(took < 1_500, `took ${took} ms`);
  assert.equal(proxy.seen.filter((s) => s.method === "POST" && s.url.endsWith("/messages")).length, 1);
  await client.deleteSession("hung-send");
});

test("a send answered after sendAndWait's timeout: the error names its key, and a wait sent again with it stores the prompt once", async () => {
  // the send reaches the service (the prompt is stored and answered), its answer comes too late
  let sends = 0;
  const client = await through((p) => {
    p.delay = (req) => (req.method === "POST" && req.url?.endsWith("/messages") && sends++ === 0 ? 1_500 : 0);
  });
  const session = await client.createSession({ sessionId: "late-send" });
  const error = await session.sendAndWait("remember me", 300).catch((e: unknown) => e);
  assert.ok(error instanceof APITimeoutError, String(error));
  assert.doesNotMatch(error.message, /unsent/);
  assert.match(error.message, /may have been stored/);
  assert.match(error.idempotencyKey ?? "", /^[0-9a-f]{32}$/);
  assert.ok(error.message.includes(String(error.idempotencyKey)), error.message);
  assert.equal(error.messageId, undefined); // the send did not answer in time

  const reply = await session.sendAndWait("remember me", 10_000, { idempotencyKey: error.idempotencyKey });
  assert.match(String(reply.data.content), /remember me/);
  const stored = await session.getMessages();
  const prompts = stored.filter((e) => e.type === "user.message");
  assert.deepEqual(prompts.map((e) => e.data.content), ["remember me"]);
  assert.equal(reply.data.reply_to, prompts[0]?.id);
  assert.equal(stored.filter((e) => e.type === "assistant.message").length, 1);
  const posts = proxy.seen.filter((s) => s.method === "POST" && s.url.endsWith("/messages"));
  assert.deepEqual(posts.map((s) => s.headers["idempotency-key"]), [error.idempotencyKey, error.idempotencyKey]);

  // again on a fresh handle with handlers, whose listener starts after the reply: at once
  const fresh = await client.resumeSession("late-send");
  fresh.on("assistant.message", () => {});
  const waited = Date.now();
  const same = await fresh.sendAndWait("remember me", 8_000, { idempotencyKey: error.idempotencyKey });
  assert.equal(same.id, reply.id);
  assert.ok(Date.now() - waited < 3_000, `took ${Date.now() - waited} ms`);
  await fresh.destroy();
  await client.deleteSession("late-send");
});

test("each batch of appendItems keeps one Idempotency-Key across its retries: stored once", async () => {
  const tried = new Set<string>();
  const client = await through((p) => {
    p.fail = (req) => {
      const key = req.headers["idempotency-key"];
      if (req.method !== "POST" || !req.url?.endsWith("/items") || typeof key !== "string" || tried.has(key)) return undefined;
      tried.add(key);
      return BAD_GATEWAY;
    };
  });
  const session = await client.createSession({ sessionId: "items-retried", mode: "store" });
  const items = Array.from({ length: 1500 }, (_, n) => ({ role: "user", content: `item ${n}` }));
  const ids = await session.appendItems(items);
  assert.equal(ids.length, 1500);
  const appends = proxy.seen.filter((s) => s.method === "POST" && s.url.endsWith("/items"));
  assert.deepEqual(appends.map((s) => s.status), [502, 201, 502, 201]); // two batches, each retried once
  const keys = appends.map((s) => s.headers["idempotency-key"]);
  assert.equal(keys[0], keys[1]);
  assert.equal(keys[2], keys[3]);
  assert.notEqual(keys[0], keys[2]);
  assert.deepEqual(await session.getItems(), items);
  await client.deleteSession("items-retried");
});
