/**
 * TypeScript client of the Redis session service.
 *
 * ```ts
 * import { SessionClient } from "redis-sessions-client";
 *
 * const client = new SessionClient({ baseUrl: "http://sessions:8000", apiKey: KEY });
 * const session = await client.createSession({ sessionId: "user-123-conversation", model: "gpt-4o" });
 * const reply = await session.sendAndWait({ prompt: "Let's discuss TypeScript generics" });
 * console.log(reply.data.content);
 * await session.destroy(); // handle released, data kept
 * ```
 */

export { SessionClient } from "./client.js";
export type { ListSessionsOptions } from "./client.js";
export {
  APIConnectionError,
  APIError,
  APITimeoutError,
  AuthenticationError,
  ConflictError,
  InternalServerError,
  NotFoundError,
  ProtocolError,
  RateLimitError,
  SessionNotFoundError,
  SessionsError,
  TurnError,
  ValidationError,
} from "./errors.js";
export type { Problem } from "./errors.js";
export type { ClientOptions } from "./http.js";
export { finishReason } from "./models.js";
export type {
  AssistantMessageData,
  Bookmark,
  Item,
  Message,
  MessageOptions,
  ResumeSessionConfig,
  SessionConfig,
  SessionEvent,
  SessionMetadata,
  SessionMode,
  SessionUpdate,
} from "./models.js";
export { Session } from "./session.js";
export type { EventHandler, EventsQuery, ItemsQuery, SendOptions } from "./session.js";
