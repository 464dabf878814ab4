/**
 * `SessionClient`: the session-level calls of the TypeScript recipe (`createSession`,
 * `resumeSession`, `listSessions`, `deleteSession`), over `fetch`.
 */

import { type ClientOptions, Http } from "./http.js";
import {
  LIST_SHAPE,
  SESSION_SHAPE,
  type ResumeSessionConfig,
  type SessionConfig,
  type SessionMetadata,
  createBody,
  knownOptions,
  positiveInteger,
  resumeBody,
  sessionMetadata,
} from "./models.js";
import { Session, sessionPath } from "./session.js";

export const SESSION_PAGE = 100;

const LIST_OPTIONS = ["labels", "limit", "pageSize"];

export interface ListSessionsOptions {
  /** Only sessions carrying every one of these labels. */
  labels?: Record<string, string>;
  /** At most this many (the most recently modified). */
  limit?: number;
  pageSize?: number;
}

type Json = Record<string, unknown>;

export class SessionClient {
  private readonly http: Http;
  private readonly sessions = new Set<Session>();

  /** `baseUrl` defaults to `SESSIONS_URL` and `apiKey` to `SESSIONS_API_KEY` (in Node). */
  constructor(options: ClientOptions = {}) {
    this.http = new Http(options);
  }

  get baseUrl(): string {
    return this.http.baseUrl;
  }

  /** Nothing to open (every call is a plain HTTP request); kept so recipe code runs as is. */
  async start(): Promise<void> {}

  /** Release every session handle this client made (their listeners stop). */
  async stop(): Promise<void> {
    await Promise.all([...this.sessions].map((session) => session.destroy()));
  }

  /** Create a session (`ConflictError` when its id is taken). */
  async createSession(config: SessionConfig = {}): Promise<Session> {
    const body = createBody(config);
    return this.session(await this.json({ method: "POST", path: "/v1/sessions", body, expect: SESSION_SHAPE }));
  }

  /** A handle on an existing session (`SessionNotFoundError` when there is none); options given
   * here are applied to it. */
  async resumeSession(sessionId: string, config: ResumeSessionConfig = {}): Promise<Session> {
    const changes = resumeBody(config);
    const path = sessionPath(sessionId);
    const raw = Object.keys(changes).length
      ? await this.json({ method: "PATCH", path, body: changes, expect: SESSION_SHAPE })
      : await this.json({ method: "GET", path, expect: SESSION_SHAPE });
    return this.session(raw);
  }

  async getSessionMetadata(sessionId: string): Promise<SessionMetadata> {
    return sessionMetadata(await this.json({ method: "GET", path: sessionPath(sessionId), expect: SESSION_SHAPE }));
  }

  /** Sessions, newest modified first, fetched page by page as they are consumed. */
  async *iterSessions(options: ListSessionsOptions = {}): AsyncGenerator<SessionMetadata> {
    const { labels = {}, limit, pageSize = SESSION_PAGE } = knownOptions(options, LIST_OPTIONS, "listSessions");
    if (limit !== undefined) positiveInteger(limit, "limit");
    positiveInteger(pageSize, "pageSize");
    let cursor: string | undefined;
    let seen = 0;
    for (;;) {
      const size = Math.max(1, Math.min(1000, limit === undefined ? pageSize : Math.min(pageSize, limit - seen)));
      const query: Array<[string, string | number]> = [["limit", size]];
      for (const [key, value] of Object.entries(labels)) query.push(["label", `${key}=${value}`]);
      if (cursor) query.push(["cursor", cursor]);
      const page = await this.json({ method: "GET", path: "/v1/sessions", query, expect: LIST_SHAPE });
      for (const raw of page.data as Json[]) {
        yield sessionMetadata(raw);
        seen += 1;
        if (limit !== undefined && seen >= limit) return;
      }
      cursor = typeof page.next_cursor === "string" ? page.next_cursor : undefined;
      if (!cursor) return;
    }
  }

  /** Every session (or the `limit` most recently modified), newest modified first. */
  async listSessions(options: ListSessionsOptions = {}): Promise<SessionMetadata[]> {
    const out: SessionMetadata[] = [];
    for await (const info of this.iterSessions(options)) out.push(info);
    return out;
  }

  /** The id of the most recently modified session, if any. */
  async getLastSessionId(): Promise<string | undefined> {
    for await (const info of this.iterSessions({ limit: 1 })) return info.sessionId;
    return undefined;
  }

  /** Delete a session and all its data for good (`SessionNotFoundError` when there is none). */
  async deleteSession(sessionId: string): Promise<void> {
    await this.json({ method: "DELETE", path: sessionPath(sessionId) });
  }

  private async json(call: Parameters<Http["json"]>[0]): Promise<Json> {
    return ((await this.http.json(call)).body ?? {}) as Json;
  }

  private session(raw: Json): Session {
    const session = new Session(this.http, sessionMetadata(raw), (s) => this.sessions.delete(s));
    this.sessions.add(session);
    return session;
  }
}
