/**
 * When to try a request again, and for how long (the same rules as the Python client):
 *
 * - A request that never reached the service (connection refused, unknown host) is retried
 *   whatever it is.
 * - Other network failures, and 502 / 503 / 504 (what ingresses answer while pods restart), are
 *   retried for repeatable calls only: GET, PUT, DELETE, and sends, whose `Idempotency-Key` makes
 *   a repeated send store one message.
 * - 429 is retried for any call: the rate limiter refused it before anything was done. Not a
 *   full quota's 429 (`"limit": "sessions"` or `"bookmarks"`): it lasts until a delete.
 * - The wait is `Retry-After` when the answer carries one, else exponential backoff with jitter.
 * - Every call has an overall deadline: no try starts, and no wait begins, that would end after
 *   it. `maxRetries` bounds the retries as well. A retry of an error answer that the deadline cuts
 *   short fails with that answer (its 503, say), not a bare timeout, unless the retry may have
 *   been carried out.
 */

import { retryAfterSeconds } from "./errors.js";

export const BACKOFF_BASE_MS = 200;
export const BACKOFF_MAX_MS = 5000;
export const RETRY_STATUSES: ReadonlySet<number> = new Set([502, 503, 504]);
const NOT_SENT_CODES = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "UND_ERR_CONNECT_TIMEOUT"]);

/** Delay before retry number `attempt` (0-based): exponential, capped, with jitter. */
export function backoffMs(attempt: number, base: number = BACKOFF_BASE_MS): number {
  const delay = Math.min(BACKOFF_MAX_MS, base * 2 ** attempt);
  return delay * (0.75 + Math.random() * 0.5);
}

/** Whether a fetch failure happened before the request left this process. */
export function neverSent(error: unknown): boolean {
  let cause: unknown = error;
  for (let depth = 0; depth < 4 && cause && typeof cause === "object"; depth++) {
    const code = (cause as { code?: unknown }).code;
    if (typeof code === "string" && NOT_SENT_CODES.has(code)) return true;
    cause = (cause as { cause?: unknown }).cause;
  }
  return false;
}

export interface RetryPolicy {
  maxRetries: number;
  /** Milliseconds for a whole call, retries included; null for none. */
  deadline: number | null;
  backoffBaseMs?: number;
}

/** The tries of one call: whether another may follow, after how long, and the time left. */
export class Attempts {
  retries = 0;
  /** The last try's timeout was cut to the time left. */
  cut = false;
  private readonly ends: number | null;

  constructor(
    readonly repeatable: boolean,
    private readonly policy: RetryPolicy,
    private readonly clock: () => number = Date.now,
  ) {
    this.ends = policy.deadline === null ? null : clock() + policy.deadline;
  }

  /** Milliseconds left before the deadline (never below 0); null without one. */
  remaining(): number | null {
    return this.ends === null ? null : Math.max(0, this.ends - this.clock());
  }

  /** The timeout of the next try: `perTry`, cut to the time left. */
  timeout(perTry: number): number {
    const left = this.remaining();
    this.cut = left !== null && left < perTry;
    return left === null ? perTry : Math.max(1, Math.min(perTry, left));
  }

  /** Whether a try that timed out (`timedOut`) had its timeout cut by the deadline, in a call
   * that the answer before it may stand for: a repeatable one, or one never sent (a try that
   * may have been carried out leaves the outcome unknown, which no earlier answer tells). A
   * timer may fire a moment before the clock reaches the deadline: this asks the cut, not the
   * clock. */
  cutShort(timedOut: boolean, error: unknown): boolean {
    return this.cut && timedOut && (this.repeatable || neverSent(error));
  }

  /** The wait (ms) before the next try after a network failure; undefined: give up. */
  afterError(error: unknown): number | undefined {
    if (!this.repeatable && !neverSent(error)) return undefined;
    return this.next(backoffMs(this.retries, this.policy.backoffBaseMs));
  }

  /** The wait (ms) before the next try after an error status; undefined: give up. */
  afterStatus(status: number, headers: Headers): number | undefined {
    if (status !== 429 && !(RETRY_STATUSES.has(status) && this.repeatable)) return undefined;
    const hinted = retryAfterSeconds(headers);
    return this.next(hinted === undefined ? backoffMs(this.retries, this.policy.backoffBaseMs) : hinted * 1000);
  }

  private next(wait: number): number | undefined {
    if (this.retries >= this.policy.maxRetries) return undefined;
    const left = this.remaining();
    if (left !== null && wait >= left) return undefined; // the answer would come too late
    this.retries += 1;
    return wait;
  }
}

/** Resolves after `ms`, or rejects with the signal's reason when it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
