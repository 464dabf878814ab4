/**
 * The client's error tree. Every error it raises on purpose is a `SessionsError`:
 *
 *     SessionsError                   base
 *     ├── APIError                    the service answered 4xx/5xx (`status`, `problem`, `headers`)
 *     │   ├── ValidationError         400 / 413 / 415 / 422: a bad value; nothing was stored
 *     │   ├── AuthenticationError     401 / 403: missing, unknown or insufficient API key
 *     │   ├── NotFoundError           404 of a bookmark or another resource
 *     │   │   └── SessionNotFoundError  404 of the session itself
 *     │   ├── ConflictError           409: the session id is taken
 *     │   ├── RateLimitError          429 after the retries (`retryAfter` seconds)
 *     │   └── InternalServerError     5xx after the retries
 *     ├── APIConnectionError          no answer (refused, reset, DNS) after the retries
 *     │   └── APITimeoutError         the call's deadline passed
 *     ├── ProtocolError               an answer the API never gives (a redirect, an HTML page
 *     │                               on an event stream, a success that is not JSON or lacks
 *     │                               what the call reads: a proxy or a wrong base URL); never
 *     │                               retried
 *     └── TurnError                   the awaited turn failed (`session.error`) or was aborted
 *
 * Client-side checks (an unknown option, a base URL that is not http(s), a limit below 1) throw
 * `ValidationError` with status 0 before anything is sent.
 */

import type { SessionEvent } from "./models.js";

/** A problem document (RFC 9457), as the service sends with every error. */
export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  [member: string]: unknown;
}

export class SessionsError extends Error {
  override name = "SessionsError";
}

export class APIError extends SessionsError {
  override name = "APIError";
  /** HTTP status; 0 for a check made before sending. */
  readonly status: number;
  readonly problem: Problem;
  readonly headers: Headers;

  constructor(status: number, problem: Problem, headers: Headers = new Headers(), message?: string) {
    const title = problem.title ?? "HTTP error";
    super(message ?? `${status} ${title}: ${problem.detail ?? title}`);
    this.status = status;
    this.problem = problem;
    this.headers = headers;
  }

  get title(): string {
    return this.problem.title ?? "";
  }

  get detail(): string {
    return this.problem.detail ?? this.message;
  }
}

export class ValidationError extends APIError {
  override name = "ValidationError";

  /** A check made in the client: nothing was sent. */
  static local(detail: string): ValidationError {
    return new ValidationError(0, { title: "Invalid input", detail }, new Headers(), detail);
  }
}

export class AuthenticationError extends APIError {
  override name = "AuthenticationError";
}

export class NotFoundError extends APIError {
  override name = "NotFoundError";
}

export class SessionNotFoundError extends NotFoundError {
  override name = "SessionNotFoundError";
}

export class ConflictError extends APIError {
  override name = "ConflictError";
}

export class RateLimitError extends APIError {
  override name = "RateLimitError";

  /** Seconds the service asked to wait (`Retry-After`), when it said. */
  get retryAfter(): number | undefined {
    return retryAfterSeconds(this.headers);
  }
}

export class InternalServerError extends APIError {
  override name = "InternalServerError";
}

export class APIConnectionError extends SessionsError {
  override name = "APIConnectionError";

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

export class APITimeoutError extends APIConnectionError {
  override name = "APITimeoutError";
  /** Of a `sendAndWait` that timed out: the `Idempotency-Key` its send carried. The prompt may
   * be stored (and answered) even when the send did not answer in time; `sendAndWait` again
   * with this key stores it at most once and waits for its reply. */
  readonly idempotencyKey: string | undefined;
  /** Of a `sendAndWait` that timed out: the message's id, when its send answered in time. */
  readonly messageId: string | undefined;

  constructor(message: string, options: { cause?: unknown; idempotencyKey?: string; messageId?: string } = {}) {
    super(message, "cause" in options ? { cause: options.cause } : undefined);
    this.idempotencyKey = options.idempotencyKey;
    this.messageId = options.messageId;
  }
}

export class ProtocolError extends SessionsError {
  override name = "ProtocolError";
  readonly status: number;

  constructor(message: string, status: number) {
    super(message);
    this.status = status;
  }
}

export class TurnError extends SessionsError {
  override name = "TurnError";
  /** The `session.error` or `abort` event that ended the turn. */
  readonly event: SessionEvent;

  constructor(message: string, event: SessionEvent) {
    super(message);
    this.event = event;
  }
}

/** `Retry-After` in seconds: a number of seconds or an HTTP date; undefined when absent. */
export function retryAfterSeconds(headers: Headers, now: number = Date.now()): number | undefined {
  const value = headers.get("retry-after")?.trim();
  if (!value) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(seconds, 0);
  const when = Date.parse(value);
  return Number.isNaN(when) ? undefined : Math.max((when - now) / 1000, 0);
}

function namesOtherResource(problem: Problem): boolean {
  const text = `${problem.type ?? ""} ${problem.title ?? ""}`.toLowerCase();
  return text.includes("bookmark") || text.includes("tenant") || text.includes("route");
}

/** The 429s a retry within seconds cannot help: a full quota (the tenant's sessions, a
 * session's bookmarks) lasts until something is deleted. */
const QUOTAS = new Set(["sessions", "bookmarks"]);

/** Whether an answer is a full quota's 429 (its problem's `limit` names a quota). */
export function isQuota(status: number, body: string): boolean {
  if (status !== 429) return false;
  try {
    const parsed: unknown = JSON.parse(body);
    return !!parsed && typeof parsed === "object" && QUOTAS.has(String((parsed as Problem).limit));
  } catch {
    return false;
  }
}

/** The error for a 4xx/5xx answer whose body was read as `body`. */
export function errorFromResponse(status: number, headers: Headers, body: string): APIError {
  let problem: Problem = {};
  try {
    const parsed: unknown = JSON.parse(body);
    if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) problem = parsed as Problem;
  } catch {
    problem = { detail: body.slice(0, 500) || undefined };
  }
  problem.title ??= `HTTP ${status}`;
  if (status === 404) {
    return namesOtherResource(problem)
      ? new NotFoundError(status, problem, headers)
      : new SessionNotFoundError(status, problem, headers);
  }
  if ([400, 413, 415, 422].includes(status)) return new ValidationError(status, problem, headers);
  if (status === 401 || status === 403) return new AuthenticationError(status, problem, headers);
  if (status === 409) return new ConflictError(status, problem, headers);
  if (status === 429) return new RateLimitError(status, problem, headers);
  if (status >= 500) return new InternalServerError(status, problem, headers);
  return new APIError(status, problem, headers);
}
