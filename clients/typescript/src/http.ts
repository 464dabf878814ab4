/**
 * The HTTP edge: `fetch` with the retry policy, per-try timeouts, the call's deadline, and the
 * mapping of error answers onto the error tree. Works wherever `fetch` does (Node 18+, browsers).
 */

import {
  APIConnectionError,
  APITimeoutError,
  ProtocolError,
  ValidationError,
  errorFromResponse,
  isQuota,
} from "./errors.js";
import { knownOptions } from "./models.js";
import { Attempts, sleep } from "./retry.js";

export const DEFAULT_BASE_URL = "http://127.0.0.1:8000";
export const DEFAULT_TIMEOUT_MS = 30_000;
export const DEFAULT_DEADLINE_MS = 60_000;
export const DEFAULT_MAX_RETRIES = 6; // backoff of about 11 s in all: an API pod restarting is ridden out

export interface ClientOptions {
  /** The service's URL; default `SESSIONS_URL` (in Node), else `http://127.0.0.1:8000`. */
  baseUrl?: string;
  /** The tenant's API key; default `SESSIONS_API_KEY` (in Node). */
  apiKey?: string;
  /** Milliseconds one try of a request may take (until the answer's headers for streams). */
  timeout?: number;
  /** Milliseconds a whole call may take, retries included; null for no bound. */
  deadline?: number | null;
  /** Retries of one call at most. */
  maxRetries?: number;
  /** A `fetch` to use instead of the global one. */
  fetch?: typeof fetch;
  /** Headers sent with every request. */
  defaultHeaders?: Record<string, string>;
  /** Base of the exponential backoff, in milliseconds (tests shorten it). */
  backoffBaseMs?: number;
}

const CLIENT_OPTIONS = ["baseUrl", "apiKey", "timeout", "deadline", "maxRetries", "fetch", "defaultHeaders", "backoffBaseMs"];

export type Query = Array<[string, string | number]>;

/** What a member of a success's JSON object is: `objects` an array of objects, `strings` an
 * array of strings, `object?` an object or null. */
export type Kind = "string" | "boolean" | "number" | "object" | "object?" | "objects" | "strings";
/** The members a success's JSON object must have, and their kinds. */
export type Shape = Record<string, Kind>;

/** One HTTP request before it is sent. */
export interface Call {
  method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  path: string;
  body?: unknown;
  query?: Query;
  headers?: Record<string, string>;
  /** Whether it may be sent again; default: GET, PUT and DELETE may. */
  repeatable?: boolean;
  /** The shape of its success's JSON: any other answer is a `ProtocolError` (another service
   * or a proxy's page behind the base URL), not a TypeError where a member is read. */
  expect?: Shape;
}

export interface Answer {
  status: number;
  headers: Headers;
  body: unknown;
}

function environment(name: string): string | undefined {
  const proc = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process;
  return proc?.env?.[name] || undefined;
}

class TryTimedOut extends Error {}

export class Http {
  readonly baseUrl: string;
  readonly timeout: number;
  readonly deadline: number | null;
  private readonly maxRetries: number;
  private readonly backoffBaseMs: number | undefined;
  private readonly fetchImpl: typeof fetch;
  private readonly headers: Record<string, string>;

  constructor(options: ClientOptions = {}) {
    // (a misspelt baseUrl, such as another SDK's baseURL, would talk to the default URL)
    options = knownOptions(options, CLIENT_OPTIONS, "client");
    this.baseUrl = baseUrlOf(options.baseUrl ?? environment("SESSIONS_URL") ?? DEFAULT_BASE_URL);
    const apiKey = options.apiKey ?? environment("SESSIONS_API_KEY");
    this.timeout = options.timeout ?? DEFAULT_TIMEOUT_MS;
    this.deadline = options.deadline === undefined ? DEFAULT_DEADLINE_MS : options.deadline;
    this.maxRetries = Math.max(0, options.maxRetries ?? DEFAULT_MAX_RETRIES);
    this.backoffBaseMs = options.backoffBaseMs;
    const fetchImpl = options.fetch ?? globalThis.fetch;
    if (typeof fetchImpl !== "function") throw new Error("no fetch: pass options.fetch");
    this.fetchImpl = fetchImpl;
    this.headers = {
      Accept: "application/json",
      ...(apiKey ? { Authorization: `Bearer ${apiKey}` } : {}),
      ...options.defaultHeaders,
    };
  }

  url(path: string, query?: Query): string {
    const search = new URLSearchParams();
    for (const [key, value] of query ?? []) search.append(key, String(value));
    const text = search.toString();
    return `${this.baseUrl}${path}${text ? `?${text}` : ""}`;
  }

  /** Send `call`; the JSON body of its success (undefined for 204). */
  async json(call: Call, signal?: AbortSignal): Promise<Answer> {
    return (await this.send(call, false, signal)) as Answer;
  }

  /** Send `call` and return the streaming response of its success (headers read, body not). */
  async stream(call: Call, signal?: AbortSignal): Promise<Response> {
    return (await this.send(call, true, signal)) as Response;
  }

  private async send(call: Call, stream: boolean, signal?: AbortSignal): Promise<Answer | Response> {
    const repeatable = call.repeatable ?? ["GET", "PUT", "DELETE"].includes(call.method);
    const attempts = new Attempts(repeatable, {
      maxRetries: this.maxRetries,
      deadline: this.deadline,
      ...(this.backoffBaseMs === undefined ? {} : { backoffBaseMs: this.backoffBaseMs }),
    });
    const init: RequestInit = {
      method: call.method,
      // the service never redirects: a redirect is a proxy or a login wall in the way, and
      // following it would answer for another URL (another session, or a send stored there)
      redirect: "manual",
      headers: {
        ...this.headers,
        ...(call.body === undefined ? {} : { "Content-Type": "application/json" }),
        ...call.headers,
      },
      ...(call.body === undefined ? {} : { body: JSON.stringify(call.body) }),
    };
    const url = this.url(call.path, call.query);
    let answered: Error | undefined; // the error answer being retried
    for (;;) {
      const controller = new AbortController();
      const onAbort = (): void => controller.abort(signal?.reason);
      signal?.addEventListener("abort", onAbort, { once: true });
      const timer = setTimeout(() => controller.abort(new TryTimedOut()), attempts.timeout(this.timeout));
      try {
        let response: Response;
        let text = "";
        try {
          response = await this.fetchImpl(url, { ...init, signal: controller.signal });
          if (!(response.ok && stream)) text = await response.text(); // within the try's time
        } catch (error) {
          if (signal?.aborted) throw signal.reason;
          const wait = attempts.afterError(error);
          if (wait === undefined) {
            const timedOut = controller.signal.reason instanceof TryTimedOut;
            // a retry the deadline cut short fails with the answer it retried
            if (answered && attempts.cutShort(timedOut, error)) throw answered;
            throw this.unreachable(error, timedOut, attempts);
          }
          answered = undefined; // that answer is no longer the service's last
          await sleep(wait, signal);
          continue;
        }
        if (isRedirect(response)) throw redirected(response, url);
        if (response.ok && stream) return response;
        if (response.ok) {
          const body = parse(response, text);
          if (call.expect) expectShape(response, body, call.expect);
          return { status: response.status, headers: response.headers, body };
        }
        const wait = attempts.afterStatus(response.status, response.headers);
        answered = errorFromResponse(response.status, response.headers, text);
        if (wait === undefined || isQuota(response.status, text)) throw answered;
        await sleep(wait, signal);
      } finally {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      }
    }
  }

  private unreachable(error: unknown, timedOut: boolean, attempts: Attempts): APIConnectionError {
    if (timedOut) {
      const what = attempts.cut ? "the call's deadline passed" : "a try timed out";
      return new APITimeoutError(`no answer from the session service at ${this.baseUrl}: ${what}`, { cause: error });
    }
    return new APIConnectionError(`cannot reach the session service at ${this.baseUrl}: ${String(error)}`, {
      cause: error,
    });
  }
}

/** Whether `response` is a redirect not followed: a 3xx, or the opaque answer (status 0) a
 * browser's fetch gives in its place. */
function isRedirect(response: Response): boolean {
  return response.type === "opaqueredirect" || (response.status >= 300 && response.status < 400);
}

function redirected(response: Response, url: string): ProtocolError {
  const location = response.headers.get("location");
  const where = location ? ` to ${location}` : "";
  return new ProtocolError(
    `${url} answered ${response.status}, a redirect${where}, which the session service never sends: ` +
      "is the base URL the session service's, and does no proxy redirect it?",
    response.status,
  );
}

function parse(response: Response, text: string): unknown {
  if (response.status === 204 || text === "") return undefined;
  const type = response.headers.get("content-type") ?? "";
  if (!/^application\/(problem\+)?json\b/i.test(type)) {
    throw new ProtocolError(
      `${response.url} answered ${response.status} with Content-Type ${JSON.stringify(type)}, not JSON: ` +
        `is the base URL the session service's? (body starts: ${JSON.stringify(text.slice(0, 120))})`,
      response.status,
    );
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new ProtocolError(
      `${response.url} answered ${response.status} with a body that is not JSON: ${String(error)} ` +
        `(body starts: ${JSON.stringify(text.slice(0, 120))})`,
      response.status,
    );
  }
}

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value);

const KINDS: Record<Kind, [string, (value: unknown) => boolean]> = {
  string: ["a string", (value) => typeof value === "string"],
  boolean: ["true or false", (value) => typeof value === "boolean"],
  number: ["a number", (value) => typeof value === "number"],
  object: ["an object", isObject],
  "object?": ["an object or null", (value) => value === null || isObject(value)],
  objects: ["an array of objects", (value) => Array.isArray(value) && value.every(isObject)],
  strings: ["an array of strings", (value) => Array.isArray(value) && value.every((item) => typeof item === "string")],
};

function expectShape(response: Response, body: unknown, shape: Shape): void {
  let wrong: string | undefined = isObject(body) ? undefined : "it is not an object";
  for (const [member, kind] of Object.entries(shape)) {
    if (wrong !== undefined) break;
    const [description, fits] = KINDS[kind];
    if (!fits((body as Record<string, unknown>)[member])) wrong = `"${member}" is not ${description}`;
  }
  if (wrong === undefined) return;
  const head = JSON.stringify(body ?? null).slice(0, 120);
  throw new ProtocolError(
    `${response.url} answered ${response.status} with JSON the session service does not give (${wrong}): ` +
      `is the base URL the session service's? (body starts: ${JSON.stringify(head)})`,
    response.status,
  );
}

/** The base URL without its trailing slashes; anything but an http(s) URL is refused at once
 * (fetch would fail every try, which reads as an outage). */
function baseUrlOf(given: unknown): string {
  let url: URL | undefined;
  try {
    url = typeof given === "string" ? new URL(given) : undefined;
  } catch {
    url = undefined;
  }
  if (url?.protocol !== "http:" && url?.protocol !== "https:") {
    throw ValidationError.local(
      `baseUrl must be an http:// or https:// URL such as "http://127.0.0.1:8000", not ${JSON.stringify(given)}`,
    );
  }
  return (given as string).replace(/\/+$/, "");
}
