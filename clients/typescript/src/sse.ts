/**
 * Live events over Server-Sent Events, read with `fetch` streaming (`EventSource` cannot send an
 * `Authorization` header). `followEvents` reconnects after a drop with `Last-Event-ID`, so no
 * event is missed or seen twice; it ends after the event that says the session is gone, refuses
 * an answer that is not an event stream (`ProtocolError`), and gives up when no connection could
 * be made again within the client's deadline.
 */

import { APIConnectionError, InternalServerError, ProtocolError, RateLimitError, SessionsError } from "./errors.js";
import type { Http } from "./http.js";
import { type SessionEvent, sessionEvent } from "./models.js";
import { sleep } from "./retry.js";

export const MEDIA_TYPE = "text/event-stream";
export const ENDING_TYPES: ReadonlySet<string> = new Set(["session.deleted", "session.expired"]);
/** The service's answer to a resume from past its live window: re-read the history. */
export const RESYNC = "session.resync";
/** Three keepalive periods of silence mean a dead connection. */
export const READ_IDLE_MS = 45_000;
const RECONNECT_MAX_MS = 2_000;

export interface ServerSentEvent {
  event: string;
  data: string;
  id: string;
}

/** The WHATWG framing: feed it lines (without line breaks); it returns an event at each blank. */
export class SSEDecoder {
  private event = "";
  private data: string[] = [];
  private lastId = "";

  feed(line: string): ServerSentEvent | undefined {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return undefined;
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (name === "event") this.event = value;
    else if (name === "data") this.data.push(value);
    else if (name === "id" && !value.includes("\0")) this.lastId = value;
    return undefined;
  }

  private dispatch(): ServerSentEvent | undefined {
    if (this.data.length === 0 && this.event === "") return undefined;
    const sse = { event: this.event || "message", data: this.data.join("\n"), id: this.lastId };
    this.event = "";
    this.data = [];
    return sse;
  }
}

/** The events of a byte stream; an event cut off by the end is dropped. `idleMs` of silence
 * fails the read (a dead connection sends no keepalives). */
export async function* readEvents(
  body: ReadableStream<Uint8Array>,
  idleMs: number = READ_IDLE_MS,
  signal?: AbortSignal,
): AsyncGenerator<ServerSentEvent> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const sse = new SSEDecoder();
  let buffer = "";
  const onAbort = (): void => void reader.cancel().catch(() => undefined);
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    for (;;) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const idle = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new APIConnectionError(`no data for ${idleMs} ms`)), idleMs);
      });
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await Promise.race([reader.read(), idle]);
      } finally {
        clearTimeout(timer);
      }
      if (chunk.done) return;
      buffer += decoder.decode(chunk.value, { stream: true });
      let newline: number;
      while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffer.slice(0, newline);
        const skip = buffer.startsWith("\r\n", newline) ? 2 : 1;
        buffer = buffer.slice(newline + skip);
        const event = sse.feed(line);
        if (event) yield event;
      }
    }
  } finally {
    signal?.removeEventListener("abort", onAbort);
    await reader.cancel().catch(() => undefined);
  }
}

/** A session event from one SSE event (the final `session.deleted` notice has its own shape). */
export function eventFromSSE(sse: ServerSentEvent): SessionEvent {
  let raw: unknown;
  try {
    raw = sse.data ? JSON.parse(sse.data) : {};
  } catch {
    raw = { data: { text: sse.data } };
  }
  const obj = (raw && typeof raw === "object" && !Array.isArray(raw) ? raw : { data: { value: raw } }) as Record<
    string,
    unknown
  >;
  if ("type" in obj && "id" in obj && "timestamp" in obj) return sessionEvent(obj);
  const data = obj.data && typeof obj.data === "object" ? (obj.data as Record<string, unknown>) : obj;
  const at = obj.at ?? obj.timestamp;
  return {
    id: typeof obj.id === "string" ? obj.id : sse.id,
    type: typeof obj.type === "string" ? obj.type : sse.event,
    data,
    timestamp: typeof at === "string" ? at : new Date().toISOString(),
  };
}

export interface FollowOptions {
  /** Only events after this id (exclusive); from the start of the kept window when absent. */
  after?: string | undefined;
  signal?: AbortSignal;
  idleMs?: number;
  /** Told the position of each event as it arrives (its SSE id: where the stream resumes). */
  onId?: (id: string) => void;
}

function isEventStream(response: Response): boolean {
  const type = response.headers.get("content-type") ?? "";
  return type.split(";")[0]?.trim().toLowerCase() === MEDIA_TYPE;
}

async function notAnEventStream(response: Response): Promise<ProtocolError> {
  const head = (await response.text().catch(() => "")).slice(0, 120);
  const type = response.headers.get("content-type") ?? "(none)";
  return new ProtocolError(
    `${response.url} answered ${response.status} with Content-Type ${JSON.stringify(type)}, not ${MEDIA_TYPE}: ` +
      `is the base URL the session service's, and does no proxy rewrite it? (body starts: ${JSON.stringify(head)})`,
    response.status,
  );
}

const isDrop = (error: unknown): boolean =>
  !(error instanceof SessionsError) ||
  error instanceof APIConnectionError ||
  error instanceof InternalServerError ||
  error instanceof RateLimitError;

/** The live events of the session at `path`, reconnecting with `Last-Event-ID` after drops. */
export async function* followEvents(http: Http, path: string, options: FollowOptions = {}): AsyncGenerator<SessionEvent> {
  let lastId = options.after;
  let attempt = 0;
  let outageSince: number | undefined;
  const { signal } = options;
  while (!signal?.aborted) {
    try {
      const headers: Record<string, string> = { Accept: MEDIA_TYPE, "Cache-Control": "no-cache" };
      if (lastId) headers["Last-Event-ID"] = lastId;
      const response = await http.stream(
        { method: "GET", path: `${path}/events/stream`, headers, query: lastId ? [["after", lastId]] : [] },
        signal,
      );
      if (!isEventStream(response) || !response.body) throw await notAnEventStream(response);
      outageSince = undefined;
      for await (const sse of readEvents(response.body, options.idleMs, signal)) {
        attempt = 0;
        const event = eventFromSSE(sse);
        lastId = sse.id || event.id; // a live copy's position, where the stream resumes exactly
        // (a resync's id is the history's end: no position until the caller has caught up)
        if (event.type !== RESYNC) options.onId?.(lastId);
        yield event;
        if (ENDING_TYPES.has(event.type)) return;
      }
    } catch (error) {
      if (signal?.aborted) return;
      if (!isDrop(error)) throw error;
      outageSince ??= Date.now();
      if (http.deadline !== null && Date.now() - outageSince >= http.deadline) {
        throw error instanceof SessionsError
          ? error
          : new APIConnectionError(`the event stream of ${path} failed and could not be reopened`, { cause: error });
      }
    }
    try {
      await sleep(Math.min(RECONNECT_MAX_MS, 50 * 2 ** attempt), signal);
    } catch {
      return; // aborted
    }
    attempt += 1;
  }
}
