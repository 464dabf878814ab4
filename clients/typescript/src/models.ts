/**
 * What the client takes and returns, in camelCase, and the mapping from and to the HTTP API's
 * snake_case fields (the API itself speaks snake_case only; the mapping lives here).
 */

import { ValidationError } from "./errors.js";
import type { Shape } from "./http.js";

/** One event of a session: the envelope the service stores and streams. `data` is passed
 * through as the service wrote it (for example `{content, reply_to}` of `assistant.message`). */
export interface SessionEvent {
  /** A durable event's place in the history (`<ms>-<n>`), a transient one's live cursor
   * (`L<ms>-<n>`): no two events of a session share one. */
  id: string;
  type: string;
  data: Record<string, unknown>;
  /** ISO-8601 time the event was stored. */
  timestamp: string;
}

/** `data` of an `assistant.message` event (the reply): `finishReason()` reads its
 * `finish_reason`. */
export interface AssistantMessageData {
  content: string;
  /** The id of the user message this answers. */
  reply_to: string;
  model?: string;
  /** Why the model stopped: `stop` (a whole answer), `length` (cut off at the token limit),
   * `content_filter` (withheld by the provider's filter), or another word of the provider's. */
  finish_reason?: string;
  usage?: { prompt_tokens: number; completion_tokens: number };
}

/** Why the model stopped, for an `assistant.message` event; undefined where the provider said
 * nothing (or for any other event). */
export function finishReason(event: SessionEvent): string | undefined {
  const value = event.type === "assistant.message" ? event.data.finish_reason : undefined;
  return typeof value === "string" ? value : undefined;
}

/** One message of the conversation, from `Session.getConversation()`. */
export interface Message {
  role: "user" | "assistant" | string;
  content: string;
  id: string;
  timestamp: string;
}

/** What a session is for: `turns`, the service runs the model on each message (`send`); `store`,
 * storage-only: the app runs its own model loop and keeps its items (`appendItems`) here. */
export type SessionMode = "turns" | "store";

/** One item of a storage-only session: any JSON object (a Responses-API message, a
 * `function_call` or its output, a reasoning item...), stored and returned unchanged. */
export type Item = Record<string, unknown>;

/** Metadata of one session, as listed or fetched. */
export interface SessionMetadata {
  sessionId: string;
  mode: SessionMode;
  startTime: Date;
  modifiedTime: Date;
  expiresAt: Date | null;
  summary?: string;
  name: string;
  model: string;
  labels: Record<string, string>;
  infinite: boolean;
  ttlSeconds: number;
  systemMessage: string;
  streaming: boolean;
  status: string;
  messageCount: number;
  eventCount: number;
  lastEventId: string;
  promptTokens: number;
  completionTokens: number;
  /** Always false: every session lives in the service. */
  isRemote: boolean;
}

export interface Bookmark {
  name: string;
  description: string;
  eventId: string;
  messageCount: number;
  createdAt: Date;
}

/** Options of `createSession`. Unknown options are a `ValidationError` (nothing is sent). */
export interface SessionConfig {
  /** 1-128 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit; generated when absent. */
  sessionId?: string;
  model?: string;
  /** A string, or the assistant SDKs' `{mode, content}` shape (its content is used). */
  systemMessage?: string | { mode?: string; content: string };
  streaming?: boolean;
  /** No TTL on any key, ever. */
  infiniteSessions?: boolean;
  labels?: Record<string, string>;
  ttlSeconds?: number;
  name?: string;
  /** `turns` (the default) or `store`, for a storage-only session (no turns: items only). */
  mode?: SessionMode;
}

/** Options `resumeSession` may change on an existing session. */
export interface ResumeSessionConfig {
  name?: string;
  labels?: Record<string, string>;
  ttlSeconds?: number;
  infiniteSessions?: boolean;
}

/** Fields `Session.update` may change. */
export interface SessionUpdate {
  name?: string;
  summary?: string;
  labels?: Record<string, string>;
  ttlSeconds?: number;
  infinite?: boolean;
}

export interface MessageOptions {
  prompt: string;
}

type Json = Record<string, unknown>;

/** What answers of the API hold at least (see `Call.expect`): a session, and a page of a list. */
export const SESSION_SHAPE: Shape = { session_id: "string" };
export const LIST_SHAPE: Shape = { data: "objects" };

const CREATE_FIELDS: Record<string, string> = {
  sessionId: "session_id",
  model: "model",
  systemMessage: "system_message",
  streaming: "streaming",
  infiniteSessions: "infinite_sessions",
  labels: "labels",
  ttlSeconds: "ttl_seconds",
  name: "name",
  mode: "mode",
};
const RESUME_FIELDS: Record<string, string> = {
  name: "name",
  labels: "labels",
  ttlSeconds: "ttl_seconds",
  infiniteSessions: "infinite",
};
const UPDATE_FIELDS: Record<string, string> = {
  name: "name",
  summary: "summary",
  labels: "labels",
  ttlSeconds: "ttl_seconds",
  infinite: "infinite",
};

/** `options` (`{}` when absent) when it names only `known` options; else a `ValidationError`
 * (nothing is sent): a misspelt option ignored would drop what it asked for, a filter
 * (`listSessions({ lables })` lists every session) or a setting. Every call that takes an
 * options object checks it here. */
export function knownOptions<T extends object>(options: T | undefined | null, known: readonly string[], what: string): T {
  if (options === undefined || options === null) return {} as T;
  if (typeof options !== "object" || Array.isArray(options)) {
    throw ValidationError.local(`the ${what} options must be an object, not ${JSON.stringify(options)}`);
  }
  const unknown = Object.keys(options).find((key) => !known.includes(key));
  if (unknown !== undefined) {
    throw ValidationError.local(`unknown ${what} option ${JSON.stringify(unknown)} (known: ${known.join(", ")})`);
  }
  return options;
}

function toBody(options: object | undefined, fields: Record<string, string>, what: string): Json {
  const body: Json = {};
  for (const [key, value] of Object.entries(knownOptions(options, Object.keys(fields), what))) {
    const field = fields[key] as string;
    if (value === undefined || value === null) continue;
    body[field] =
      field === "system_message" && typeof value === "object" ? (value as { content: string }).content : value;
  }
  return body;
}

/** `value` when it is a whole number of at least 1; else a `ValidationError` (nothing is sent). */
export function positiveInteger(value: unknown, name: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1) {
    throw ValidationError.local(`${name} must be a whole number of at least 1, not ${String(value)}`);
  }
  return value;
}

export const createBody = (config?: SessionConfig): Json => toBody(config, CREATE_FIELDS, "session");
export const resumeBody = (config?: ResumeSessionConfig): Json => toBody(config, RESUME_FIELDS, "resume");
export const updateBody = (changes: SessionUpdate): Json => toBody(changes, UPDATE_FIELDS, "update");

const str = (value: unknown): string => (typeof value === "string" ? value : "");
const num = (value: unknown): number => (typeof value === "number" ? value : 0);
const date = (value: unknown): Date => new Date(str(value));

export function sessionMetadata(raw: Json): SessionMetadata {
  const summary = str(raw.summary);
  return {
    sessionId: str(raw.session_id),
    mode: raw.mode === "store" ? "store" : "turns",
    startTime: date(raw.created_at),
    modifiedTime: date(raw.modified_at),
    expiresAt: raw.expires_at ? date(raw.expires_at) : null,
    ...(summary ? { summary } : {}),
    name: str(raw.name),
    model: str(raw.model),
    labels: (raw.labels as Record<string, string> | undefined) ?? {},
    infinite: raw.infinite === true,
    ttlSeconds: num(raw.ttl_seconds),
    systemMessage: str(raw.system_message),
    streaming: raw.streaming === true,
    status: str(raw.status) || "idle",
    messageCount: num(raw.message_count),
    eventCount: num(raw.event_count),
    lastEventId: str(raw.last_event_id),
    promptTokens: num(raw.prompt_tokens),
    completionTokens: num(raw.completion_tokens),
    isRemote: false,
  };
}

export function sessionEvent(raw: Json): SessionEvent {
  return {
    id: str(raw.id),
    type: str(raw.type),
    data: (raw.data as Record<string, unknown> | undefined) ?? {},
    timestamp: str(raw.timestamp),
  };
}

export function message(raw: Json): Message {
  return { role: str(raw.role), content: str(raw.content), id: str(raw.id), timestamp: str(raw.timestamp) };
}

export function bookmark(raw: Json): Bookmark {
  return {
    name: str(raw.name),
    description: str(raw.description),
    eventId: str(raw.event_id),
    messageCount: num(raw.message_count),
    createdAt: date(raw.created_at),
  };
}

/** Whether the stream position `position` comes after `than`. Two live positions (`L<ms>-<n>`:
 * one live stream) or two history ids compare exactly; across the two only the clock tells: a
 * history id is later from the next millisecond, a live position from the same one. */
export function isLater(position: string, than: string): boolean {
  const live = position.startsWith("L");
  const liveThan = than.startsWith("L");
  if (live === liveThan) return compareIds(position.replace(/^L/, ""), than.replace(/^L/, "")) > 0;
  const [ms] = idParts(position.replace(/^L/, ""));
  const [msThan] = idParts(than.replace(/^L/, ""));
  return live ? ms >= msThan : ms > msThan;
}

/** Order of two event ids (`<ms>-<seq>`): negative, zero or positive. */
export function compareIds(a: string, b: string): number {
  const [am, as] = idParts(a);
  const [bm, bs] = idParts(b);
  const diff = am !== bm ? am - bm : as - bs;
  return diff < 0n ? -1 : diff > 0n ? 1 : 0;
}

function idParts(id: string): [bigint, bigint] {
  const match = /^(\d+)(?:-(\d+))?$/.exec(id);
  return match ? [BigInt(match[1] ?? "0"), BigInt(match[2] ?? "0")] : [0n, 0n];
}
