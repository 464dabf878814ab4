/**
 * `Session`: a handle on one session. It holds no conversation state (everything lives in the
 * service), so a handle can be released with `destroy()` and the session resumed later, from
 * any process.
 */

import { APITimeoutError, SessionNotFoundError, SessionsError, TurnError, ValidationError } from "./errors.js";
import type { Call, Http } from "./http.js";
import {
  LIST_SHAPE,
  SESSION_SHAPE,
  type Bookmark,
  type Item,
  type Message,
  type MessageOptions,
  type SessionEvent,
  type SessionMetadata,
  type SessionUpdate,
  bookmark,
  compareIds,
  isLater,
  knownOptions,
  message,
  positiveInteger,
  sessionEvent,
  sessionMetadata,
  updateBody,
} from "./models.js";
import { ENDING_TYPES, RESYNC, followEvents } from "./sse.js";

/** Events the service keeps only in its live window; every other one is in the history. */
const TRANSIENT_TYPES = new Set([
  "session.start",
  "assistant.turn_start",
  "assistant.message_delta",
  "assistant.turn_end",
  "assistant.usage",
  "session.idle",
  "session.title_changed",
  "session.compaction_start",
  "item.popped",
  "items.cleared",
]);

export const PAGE = 1000; // the service's largest page
export const ITEMS_PAGE = 10_000; // the service's largest page of items
export const ITEMS_BATCH = 1000; // the service's largest append
const OVERLAP_KEPT = 1000; // ids of a catch-up kept to know the resumed stream's copies
const LAST_LOOK_MS = 2000; // how long a wait's look in the history before it times out may take
const KEPT_OUTCOMES = 256; // turn outcomes kept for a waiter that registers after they arrive
export const DEFAULT_WAIT_MS = 60_000;
/** The longest wait a timer keeps: Node fires a longer one after 1 ms. */
export const MAX_WAIT_MS = 2_147_483_647;

export type EventHandler = (event: SessionEvent) => void | Promise<void>;

export interface SendOptions {
  /** Sent as `Idempotency-Key`: a send repeated with the same key is stored once. A new key is
   * made for every call when absent, and kept across the retries of that call. */
  idempotencyKey?: string;
}

const SEND_OPTIONS = ["idempotencyKey"];
const EVENTS_OPTIONS = ["after", "before", "limit", "reverse"];
const ITEMS_OPTIONS = ["limit", "before"];

export interface EventsQuery {
  /** Only events after this id (exclusive). */
  after?: string;
  /** Only events before this id (exclusive). */
  before?: string;
  /** The first this many (the newest with `reverse`); all when absent. */
  limit?: number;
  /** Newest first. */
  reverse?: boolean;
}

export interface ItemsQuery {
  /** The newest this many items; all when absent. */
  limit?: number;
  /** Only items before this item id (exclusive). */
  before?: string;
}

type Json = Record<string, unknown>;

/** How the listener ends a wait: the event that ends the turn, an error, or `undefined` when it
 * stopped before the turn ended (the waiter follows the rest on its own stream). */
type Settled = { event: SessionEvent } | { error: unknown } | undefined;

interface Waiter {
  /** The listener that settles it. */
  listener: AbortController;
  settle: (settled: Settled) => void;
}

/** The URL path of a session; ids that cannot be a path segment are refused before sending. */
export function sessionPath(sessionId: string): string {
  if (typeof sessionId !== "string" || ["", ".", ".."].includes(sessionId) || sessionId.includes("/")) {
    throw ValidationError.local(`invalid session id ${JSON.stringify(sessionId)}`);
  }
  return `/v1/sessions/${encodeURIComponent(sessionId)}`;
}

function promptOf(options: MessageOptions | string): string {
  if (typeof options === "string") return options;
  const { prompt } = knownOptions(options, ["prompt"], "message");
  if (typeof prompt !== "string") throw ValidationError.local("a message needs a prompt: send({ prompt })");
  return prompt;
}

/** `timeout` when it is a wait `sendAndWait` can keep: milliseconds above 0, at most
 * `MAX_WAIT_MS`. Anything else would end the wait at once (0, NaN, a timer too long) or never. */
function waitTimeout(timeout: unknown): number {
  if (typeof timeout !== "number" || !(timeout > 0) || timeout > MAX_WAIT_MS) {
    throw ValidationError.local(`timeout must be a number of milliseconds above 0, at most ${MAX_WAIT_MS}, not ${String(timeout)}`);
  }
  return timeout;
}

/** The `Idempotency-Key` of a send: the caller's (1-200 printable ASCII characters, what the
 * service takes and a header can carry), or a fresh one when none (or "") is given. */
function idempotencyKey(given: string | undefined): string {
  if (given === undefined || given === "") return newKey();
  if (typeof given !== "string" || !/^[\x20-\x7e]{1,200}$/.test(given)) {
    throw ValidationError.local("idempotencyKey must be 1-200 printable ASCII characters");
  }
  return given;
}

/** A fresh `Idempotency-Key`: 128 random bits (Web Crypto where there is one; Node 18 has it
 * only behind a flag, and the key needs to be unique, not secret). */
function newKey(): string {
  const bytes = new Uint8Array(16);
  const crypto = (globalThis as { crypto?: { getRandomValues?: (array: Uint8Array) => unknown } }).crypto;
  if (crypto?.getRandomValues) crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Whether `event` ends the turn of the user message `messageId`. */
export function answers(event: SessionEvent, messageId: string): boolean {
  if (event.type === "assistant.message" || event.type === "session.error") {
    return event.data.reply_to === messageId;
  }
  return event.type === "abort" && compareIds(event.id, messageId) > 0;
}

/** The error of a wait that timed out. A send not answered in time may still have reached the
 * service: its prompt may be stored and answered, which only its key can find out. */
function waitTimedOut(sessionId: string, timeout: number, key: string, messageId: string | undefined): APITimeoutError {
  const session = JSON.stringify(sessionId);
  const again = `sendAndWait again with idempotencyKey ${JSON.stringify(key)}`;
  if (messageId !== undefined) {
    return new APITimeoutError(
      `no reply in session ${session} to message ${messageId} within ${timeout} ms (${again} waits for it)`,
      { idempotencyKey: key, messageId },
    );
  }
  return new APITimeoutError(
    `no reply in session ${session} within ${timeout} ms, and no answer to the send: its prompt may have been ` +
      `stored (and be answered); ${again} stores it at most once and waits for its reply`,
    { idempotencyKey: key },
  );
}

function deletedWhileWaiting(sessionId: string): SessionNotFoundError {
  return new SessionNotFoundError(404, {
    title: "Session not found",
    detail: `session ${JSON.stringify(sessionId)} was deleted while waiting`,
  });
}

export class Session {
  readonly sessionId: string;
  /** The metadata as last fetched (`refresh()` fetches it again). */
  metadata: SessionMetadata;
  private readonly path: string;
  private cursor: string | undefined;
  // the newest durable event the listener handed on (a catch-up after a resync reads after it)
  private newestDurable: string | undefined;
  private readonly handlers = new Set<{ type: string | undefined; handler: EventHandler }>();
  private listener: AbortController | undefined;
  // turns awaited through the listener, by message id; the turn outcomes it delivered that no
  // waiter took yet (the reply can beat the send's own response), by reply_to, oldest first;
  // and the last abort it delivered
  private readonly waiters = new Map<string, Waiter>();
  private readonly outcomes = new Map<string, SessionEvent>();
  private lastAbort: SessionEvent | undefined;
  private dispatching = 0; // events whose handlers are running now
  private handling: SessionEvent | undefined; // the event the listener's handlers have now

  /** @internal Made by `SessionClient`. */
  constructor(
    private readonly http: Http,
    metadata: SessionMetadata,
    private readonly released: (session: Session) => void,
  ) {
    this.metadata = metadata;
    this.sessionId = metadata.sessionId;
    this.path = sessionPath(metadata.sessionId);
    this.cursor = metadata.lastEventId || undefined;
    this.newestDurable = this.cursor;
  }

  /** Events of the stream as handlers get them: after `session.resync` (the stream could not
   * resume where it left off, past the live window) the history after the newest durable event
   * seen, then the stream again; the stream resumed a moment before that history was read, so
   * what both carry is handed on once. Durable events may arrive out of id order (on a Redis
   * Cluster a copy is published after its write): none is dropped for that. The handle's cursor
   * follows the stream's own positions (`onId`), and the history ids of a catch-up. */
  private async *delivered(
    events: AsyncIterable<SessionEvent>,
    from: string | undefined,
    listening = false,
  ): AsyncGenerator<SessionEvent> {
    // the newest history event this stream handed on (a live id is no place in the history);
    // per stream, as a handle may follow two at once (on() and sendAndWait); the listener's
    // outlives its stream: a listener started again from a live position catches up after it
    let durable = from?.startsWith("L") ? (listening ? this.newestDurable : undefined) : from;
    let caughtUp = new Set<string>(); // ids the last catch-up handed on
    for await (const event of events) {
      const resync = event.type === RESYNC;
      const batch = resync ? await this.getEvents(durable ? { after: durable } : {}) : [event];
      for (const item of batch) {
        // (an ending notice has no id of its own: it is never one handed on already)
        if (!TRANSIENT_TYPES.has(item.type) && !ENDING_TYPES.has(item.type) && !item.id.startsWith("L")) {
          // handed on already: the newest one again (on a Redis Cluster a copy is published
          // after its write, so it can follow a connect that started after it), or one the
          // catch-up after a resync handed on
          if (item.id === durable || (!resync && caughtUp.delete(item.id))) continue;
          if (durable === undefined || compareIds(item.id, durable) > 0) durable = item.id;
          if (listening) this.newestDurable = durable;
        }
        if (resync) this.saw(item.id);
        yield item;
      }
      if (resync) caughtUp = new Set(batch.slice(-OVERLAP_KEPT).map((item) => item.id));
    }
  }

  /** Move the handle's cursor (where its next listener starts) to `position` (a stream's
   * `Last-Event-ID`, or a history id) when that comes later. */
  private saw(position: string): void {
    if (this.cursor === undefined || isLater(position, this.cursor)) this.cursor = position;
  }

  private async call(call: Call, signal?: AbortSignal): Promise<Json> {
    return ((await this.http.json(call, signal)).body ?? {}) as Json;
  }

  // --- turns ------------------------------------------------------------------------------------
  /** Add a user message and queue its turn; resolves to the message's event id. */
  async send(options: MessageOptions | string, sendOptions: SendOptions = {}): Promise<string> {
    const prompt = promptOf(options);
    const key = idempotencyKey(knownOptions(sendOptions, SEND_OPTIONS, "send").idempotencyKey);
    return (await this.post(prompt, key)).messageId;
  }

  /** The message's id, and whether an earlier send with the same key stored it already. */
  private async post(prompt: string, key: string, signal?: AbortSignal): Promise<{ messageId: string; duplicate: boolean }> {
    const body = await this.call(
      {
        method: "POST",
        path: `${this.path}/messages`,
        body: { prompt },
        headers: { "Idempotency-Key": key },
        repeatable: true,
        expect: { message_id: "string" },
      },
      signal,
    );
    return { messageId: String(body.message_id), duplicate: body.duplicate === true };
  }

  /** Send a message and wait for the `assistant.message` event answering it (its
   * `data.content` is the reply). Rejects with `APITimeoutError` when `timeout` ms pass, the
   * send included, with `TurnError` when the turn fails or is aborted, with
   * `SessionNotFoundError` when the session is deleted meanwhile. A `timeout` that is not a
   * number above 0 and at most `MAX_WAIT_MS` is a `ValidationError` (nothing is sent).
   *
   * The send carries `sendOptions.idempotencyKey`, or a new key. The `APITimeoutError` names it
   * (`idempotencyKey`, and `messageId` when the send answered in time): the prompt may be stored
   * and answered even when its send did not answer in time, and `sendAndWait` again with that
   * key stores it at most once and waits for its reply.
   *
   * While `on()` handlers are registered, the handle's listener settles the wait once the
   * handlers have had the event that ends the turn (and so every delta before it): after it
   * resolves, nothing of the turn is still on its way to them. Should the listener stop first
   * (`destroy()`, the last handler unsubscribed), the wait goes on over a stream of its own
   * from the message on; should it fail, the wait rejects with its error. An answer that came
   * in time is returned at the timeout even if the handlers still run. Without handlers, or
   * when called while handlers run (from a handler), the wait follows a stream of its own.
   *
   * Before it rejects with `APITimeoutError` it looks in the history once (within 2 s more): an
   * answer stored whose live copy never came still ends the wait; with handlers, once the
   * listener has handed it on, or those 2 s have passed. */
  async sendAndWait(
    options: MessageOptions | string,
    timeout: number = DEFAULT_WAIT_MS,
    sendOptions: SendOptions = {},
  ): Promise<SessionEvent> {
    const prompt = promptOf(options);
    waitTimeout(timeout);
    const key = idempotencyKey(knownOptions(sendOptions, SEND_OPTIONS, "sendAndWait").idempotencyKey);
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeout);
    let messageId: string | undefined;
    // a listener that runs from before the send delivers the answer; one started meanwhile
    // may start past it (another stream of the handle moved the cursor on). A call made while
    // handlers run (from a handler, most likely) cannot wait for the listener: it waits for
    // that handler to return.
    const listener = this.dispatching === 0 ? this.listener : undefined;
    try {
      const sent = await this.post(prompt, key, controller.signal);
      messageId = sent.messageId;
      // sent before (a wait again with its key): its turn may be over, before any stream began
      const done = sent.duplicate ? await this.storedOutcome(messageId, controller.signal) : undefined;
      if (done) return turnOutcome(messageId, done);
      const settled = listener ? await this.settledBy(listener, messageId, controller.signal) : undefined;
      if (settled && "event" in settled) return turnOutcome(messageId, settled.event);
      if (settled) throw settled.error;
      const onId = (id: string): void => this.saw(id);
      const events = followEvents(this.http, this.path, { after: messageId, signal: controller.signal, onId });
      for await (const event of this.delivered(events, messageId)) {
        if (answers(event, messageId)) return turnOutcome(messageId, event);
        if (ENDING_TYPES.has(event.type)) throw deletedWhileWaiting(this.sessionId);
      }
    } catch (error) {
      // the send (or a read) cut short by the timeout: the abort's own error, not the client's
      if (!controller.signal.aborted || error instanceof SessionsError) throw error;
    } finally {
      clearTimeout(timer);
    }
    const look = AbortSignal.timeout(LAST_LOOK_MS);
    const stored = messageId === undefined ? undefined : await this.storedOutcome(messageId, look);
    if (stored && messageId !== undefined) {
      // the handlers are to have the turn first: the listener may hand it on yet (slow handlers)
      const settled = listener ? await this.settledBy(listener, messageId, look).catch(() => undefined) : undefined;
      return turnOutcome(messageId, settled && "event" in settled ? settled.event : stored);
    }
    throw waitTimedOut(this.sessionId, timeout, key, messageId);
  }

  /** The stored event that ended the turn of `messageId`, if any: a last look, until `signal`
   * aborts, before a wait reports a timeout. The history holds the answer even when the
   * live copy a stream waited for never came (on a Redis Cluster, a process that died between
   * writing an answer and publishing its copy). A look that fails finds nothing. */
  private async storedOutcome(messageId: string, signal: AbortSignal): Promise<SessionEvent | undefined> {
    try {
      const page = await this.eventsPage({ after: messageId }, PAGE, signal);
      return page.find((event) => answers(event, messageId));
    } catch {
      return undefined;
    }
  }

  /** How `listener` ends the turn of `messageId`: with what it delivered already (before the
   * send returned the id), or when it delivers the answer; `undefined` when it stopped. */
  private settledBy(listener: AbortController, messageId: string, signal: AbortSignal): Promise<Settled> {
    const kept = this.outcomes.get(messageId);
    if (kept) {
      this.outcomes.delete(messageId);
      return Promise.resolve({ event: kept });
    }
    if (this.lastAbort && answers(this.lastAbort, messageId)) return Promise.resolve({ event: this.lastAbort });
    if (this.listener !== listener) return Promise.resolve(undefined);
    return new Promise<Settled>((resolve, reject) => {
      const timedOut = (): void => {
        this.waiters.delete(messageId);
        // the answer came in time: slow handlers do not make it a timeout
        const answer = this.handling;
        if (answer && answers(answer, messageId)) resolve({ event: answer });
        else reject(signal.reason);
      };
      if (signal.aborted) return timedOut();
      signal.addEventListener("abort", timedOut, { once: true });
      this.waiters.set(messageId, {
        listener,
        settle: (settled) => {
          signal.removeEventListener("abort", timedOut);
          resolve(settled);
        },
      });
    });
  }

  /** Hand an event the handlers had to the wait it ends (or keep it for a moment). */
  private settle(listener: AbortController, event: SessionEvent): void {
    if (event.type === "assistant.message" || event.type === "session.error") {
      const replyTo = event.data.reply_to;
      if (typeof replyTo !== "string") return;
      const waiter = this.waiters.get(replyTo);
      if (waiter?.listener === listener) {
        this.waiters.delete(replyTo);
        waiter.settle({ event });
        return;
      }
      this.outcomes.delete(replyTo);
      this.outcomes.set(replyTo, event);
      for (const old of this.outcomes.keys()) {
        if (this.outcomes.size <= KEPT_OUTCOMES) break;
        this.outcomes.delete(old);
      }
    } else if (event.type === "abort") {
      this.lastAbort = event;
      for (const [messageId, waiter] of this.waiters) {
        if (waiter.listener === listener && answers(event, messageId)) {
          this.waiters.delete(messageId);
          waiter.settle({ event });
        }
      }
    } else if (ENDING_TYPES.has(event.type)) {
      this.release(listener, { error: deletedWhileWaiting(this.sessionId) });
    }
  }

  /** End the waits `listener` was to settle, as it stops. */
  private release(listener: AbortController, settled: Settled): void {
    for (const [messageId, waiter] of this.waiters) {
      if (waiter.listener !== listener) continue;
      this.waiters.delete(messageId);
      waiter.settle(settled);
    }
  }

  /** Drop the pending turns; true when something was pending. */
  async abort(): Promise<boolean> {
    const body = await this.call({ method: "POST", path: `${this.path}/abort`, repeatable: true, expect: { aborted: "boolean" } });
    return body.aborted === true;
  }

  // --- live events ------------------------------------------------------------------------------
  /** Call `handler` for every live event (`on(handler)`) or for events of one type
   * (`on(type, handler)`). Returns a function that unsubscribes. Events are followed from the
   * last one this handle saw, over one stream per handle, resumed with `Last-Event-ID`. */
  on(handler: EventHandler): () => void;
  on(type: string, handler: EventHandler): () => void;
  on(typeOrHandler: string | EventHandler, maybeHandler?: EventHandler): () => void {
    // a type that is not a string would match no event: the handler would never run
    if (maybeHandler !== undefined && typeof typeOrHandler !== "string") {
      throw new TypeError(`the event type must be a string, not ${typeof typeOrHandler}: on(type, handler)`);
    }
    const entry =
      typeof typeOrHandler === "function"
        ? { type: undefined, handler: typeOrHandler }
        : { type: typeOrHandler, handler: maybeHandler as EventHandler };
    if (typeof entry.handler !== "function") throw new TypeError("on(handler) or on(type, handler)");
    this.handlers.add(entry);
    this.listen();
    return () => {
      this.handlers.delete(entry);
      if (this.handlers.size === 0) this.stopListening();
    };
  }

  private listen(): void {
    if (this.listener) return;
    const controller = new AbortController();
    this.listener = controller;
    void (async () => {
      try {
        // the cursor follows the stream's own positions (a live copy's, not its history id)
        const onId = (id: string): void => this.saw(id);
        const events = followEvents(this.http, this.path, { after: this.cursor, signal: controller.signal, onId });
        for await (const event of this.delivered(events, this.cursor, true)) {
          this.dispatching += 1;
          this.handling = event;
          try {
            await this.dispatch(event);
          } finally {
            this.dispatching -= 1;
            this.handling = undefined;
          }
          // after the handlers: a wait ends once they have had the turn's last event
          this.settle(controller, event);
        }
        this.release(controller, undefined);
      } catch (error) {
        if (controller.signal.aborted) {
          this.release(controller, undefined);
        } else {
          console.warn(`event listener of session ${this.sessionId} stopped:`, error);
          this.release(controller, { error });
        }
      } finally {
        if (this.listener === controller) this.listener = undefined;
      }
    })();
  }

  /** Run the handlers of `event`, one after the other; a failing one is logged. */
  private async dispatch(event: SessionEvent): Promise<void> {
    for (const { type, handler } of [...this.handlers]) {
      if (type !== undefined && type !== event.type) continue;
      try {
        await handler(event);
      } catch (error) {
        console.error(`event handler of session ${this.sessionId} failed:`, error);
      }
    }
  }

  private stopListening(): void {
    const listener = this.listener;
    this.listener = undefined;
    if (!listener) return;
    listener.abort();
    this.release(listener, undefined); // its waits go on over streams of their own
  }

  /** Whether a listener follows the session's events now. */
  get listening(): boolean {
    return this.listener !== undefined;
  }

  /** Release the handle: stop its listener. The session's data stays; resume it by its id. */
  async destroy(): Promise<void> {
    this.handlers.clear();
    this.stopListening();
    this.released(this);
  }

  // --- history ----------------------------------------------------------------------------------
  /** Every stored event of the session (`{id, type, data, timestamp}`), oldest first. */
  async getMessages(): Promise<SessionEvent[]> {
    return this.getEvents();
  }

  /** The conversation only (user and assistant messages, `{role, content, id, timestamp}`). */
  async getConversation(): Promise<Message[]> {
    return this.conversationFrom(`${this.path}/messages`);
  }

  /** Every message of the pages from `first` on, following `next_cursor`. */
  private async conversationFrom(first: string): Promise<Message[]> {
    const out: Message[] = [];
    let path = first;
    let after: string | undefined;
    do {
      const query: Array<[string, string | number]> = [["limit", PAGE]];
      if (after) query.push(["after", after]);
      const body = await this.call({ method: "GET", path, query, expect: LIST_SHAPE });
      out.push(...(body.data as Json[]).map(message));
      after = typeof body.next_cursor === "string" ? body.next_cursor : undefined;
      path = `${this.path}/messages`;
    } while (after);
    return out;
  }

  /** Stored events between the exclusive ids `after` and `before` (durable events' ids: a
   * transient event's `L...` id is refused), oldest first (newest first with `reverse`): all
   * of them, or the first `limit`, read page by page. */
  async getEvents(query: EventsQuery = {}): Promise<SessionEvent[]> {
    query = knownOptions(query, EVENTS_OPTIONS, "getEvents");
    const limit = query.limit === undefined ? undefined : positiveInteger(query.limit, "limit");
    let { after, before } = query;
    const out: SessionEvent[] = [];
    for (;;) {
      const size = limit === undefined ? PAGE : Math.min(PAGE, limit - out.length);
      const page = await this.eventsPage({ after, before, reverse: query.reverse }, size);
      out.push(...page);
      const last = page[page.length - 1]?.id;
      if (page.length < size || (limit !== undefined && out.length >= limit) || !last) return out;
      if (query.reverse) before = last;
      else after = last;
    }
  }

  /** One page of stored events: at most `size`, between `after` and `before`. */
  private async eventsPage(query: EventsQuery, size: number, signal?: AbortSignal): Promise<SessionEvent[]> {
    const params: Array<[string, string | number]> = [["limit", size]];
    if (query.after) params.push(["after", query.after]);
    if (query.before) params.push(["before", query.before]);
    if (query.reverse) params.push(["reverse", "true"]);
    const call: Call = { method: "GET", path: `${this.path}/events`, query: params, expect: LIST_SHAPE };
    return ((await this.call(call, signal)).data as Json[]).map(sessionEvent);
  }

  // --- items (storage-only sessions) -------------------------------------------------------------
  /** Append `items` in order; resolves to their ids. Each batch of up to 1,000 is stored
   * atomically, and once however often it is retried: every try of it carries the same
   * `Idempotency-Key`. A session that runs turns takes no items (`ConflictError`). Any object
   * type is taken (an SDK's item interfaces have no index signature). */
  async appendItems(items: readonly object[]): Promise<string[]> {
    if (!Array.isArray(items) || !items.every((item) => item && typeof item === "object" && !Array.isArray(item))) {
      throw ValidationError.local("appendItems takes an array of objects");
    }
    const ids: string[] = [];
    for (let start = 0; start < items.length; start += ITEMS_BATCH) {
      const body = await this.call({
        method: "POST",
        path: `${this.path}/items`,
        body: { items: items.slice(start, start + ITEMS_BATCH) },
        headers: { "Idempotency-Key": newKey() },
        repeatable: true,
        expect: { ids: "strings" },
      });
      ids.push(...(body.ids as string[]));
    }
    return ids;
  }

  /** The newest `limit` items (all when absent), before the item `before` when given, oldest
   * first, as appended. */
  async getItems(query: ItemsQuery = {}): Promise<Item[]> {
    query = knownOptions(query, ITEMS_OPTIONS, "getItems");
    let wanted = query.limit === undefined ? undefined : positiveInteger(query.limit, "limit");
    let before = query.before;
    const pages: Item[][] = []; // newest first
    for (;;) {
      const size = wanted === undefined ? ITEMS_PAGE : Math.min(wanted, ITEMS_PAGE);
      const params: Array<[string, string | number]> = [["limit", size]];
      if (before) params.push(["before", before]);
      const body = await this.call({
        method: "GET",
        path: `${this.path}/items`,
        query: params,
        expect: { data: "objects", ids: "strings" },
      });
      const data = body.data as Item[];
      pages.push(data);
      if (wanted !== undefined) wanted -= data.length;
      before = (body.ids as string[])[0];
      if (data.length < size || (wanted !== undefined && wanted <= 0) || !before) break;
    }
    return pages.reverse().flat();
  }

  /** Remove the newest item and resolve to it; undefined when there is none. */
  async popItem(): Promise<Item | undefined> {
    const body = await this.call({ method: "POST", path: `${this.path}/items/pop`, expect: { item: "object?" } });
    return (body.item as Item | null) ?? undefined;
  }

  /** Drop every item (and bookmark); the session keeps its id, TTL, labels and settings.
   * Resolves to the number of items removed. */
  async clearItems(): Promise<number> {
    const body = await this.call({ method: "DELETE", path: `${this.path}/items`, expect: { removed: "number" } });
    return body.removed as number;
  }

  // --- bookmarks --------------------------------------------------------------------------------
  private bookmarkPath(name: string): string {
    if (typeof name !== "string" || ["", ".", ".."].includes(name) || name.includes("/")) {
      throw ValidationError.local(`invalid bookmark name ${JSON.stringify(name)}`);
    }
    return `${this.path}/bookmarks/${encodeURIComponent(name)}`;
  }

  /** Mark the current end of the conversation as `name` (replacing one of that name). */
  async setBookmark(name: string, description = ""): Promise<Bookmark> {
    return bookmark(
      await this.call({ method: "PUT", path: this.bookmarkPath(name), body: { description }, expect: { name: "string" } }),
    );
  }

  async getBookmarks(): Promise<Bookmark[]> {
    const body = await this.call({ method: "GET", path: `${this.path}/bookmarks`, expect: LIST_SHAPE });
    return (body.data as Json[]).map(bookmark);
  }

  async deleteBookmark(name: string): Promise<void> {
    await this.call({ method: "DELETE", path: this.bookmarkPath(name) });
  }

  /** The conversation's messages after bookmark `name`. */
  async getMessagesSince(name: string): Promise<Message[]> {
    return this.conversationFrom(`${this.bookmarkPath(name)}/messages`);
  }

  // --- metadata ---------------------------------------------------------------------------------
  /** Fetch the metadata again. */
  async refresh(): Promise<SessionMetadata> {
    return this.keep(await this.call({ method: "GET", path: this.path, expect: SESSION_SHAPE }));
  }

  /** Change `name`, `summary`, `labels`, `ttlSeconds` or `infinite`. */
  async update(changes: SessionUpdate): Promise<SessionMetadata> {
    return this.keep(await this.call({ method: "PATCH", path: this.path, body: updateBody(changes), expect: SESSION_SHAPE }));
  }

  /** `{session, bookmarks, events}` as the service exports it (snake_case, as stored). */
  async export(): Promise<Json> {
    return this.call({ method: "GET", path: `${this.path}/export`, query: [["format", "json"]], expect: { session: "object" } });
  }

  private keep(raw: Json): SessionMetadata {
    this.metadata = sessionMetadata(raw);
    // (a live position is exact: which of the two comes later only the clock guesses)
    if (this.metadata.lastEventId && !this.cursor?.startsWith("L")) this.saw(this.metadata.lastEventId);
    return this.metadata;
  }
}

function turnOutcome(messageId: string, event: SessionEvent): SessionEvent {
  if (event.type === "assistant.message") return event;
  if (event.type === "session.error") {
    const detail = event.data.message ?? event.data.errorType ?? "error";
    throw new TurnError(`the turn of message ${messageId} failed: ${String(detail)}`, event);
  }
  throw new TurnError(`the turn of message ${messageId} was aborted`, event);
}
