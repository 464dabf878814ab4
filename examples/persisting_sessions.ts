/**
 * Session persistence and resumption: the TypeScript recipe of the assistant SDKs, run against
 * this service. The recipe's code is kept as written; only the import and the client's class
 * change:
 *
 *     import { CopilotClient } from "@github/copilot-sdk";  ->  import { SessionClient } from "redis-sessions-client";
 *     const client = new CopilotClient();                   ->  const client = new SessionClient();
 *
 * `new SessionClient()` reads the service's address and key from SESSIONS_URL and
 * SESSIONS_API_KEY (or pass `{ baseUrl, apiKey }`). Run it against a running service:
 *
 *     export SESSIONS_URL=http://127.0.0.1:8000 SESSIONS_API_KEY=sk_...
 *     cd clients/typescript && npm ci && npm run build:tests
 *     node build/examples/persisting_sessions.js
 *
 * (or `npx tsx examples/persisting_sessions.ts` in a project that installed the client). The
 * session it makes is deleted at the end; a second run starts from scratch.
 */

import { SessionClient } from "redis-sessions-client";

// An interrupted earlier run would have left the session behind (its id would be taken).
await new SessionClient().deleteSession("user-123-conversation").catch(() => undefined);

// --- Creating a session with a custom ID ---
{
  const client = new SessionClient();
  await client.start();

  // Create session with a memorable ID
  const session = await client.createSession({
    sessionId: "user-123-conversation",
    model: "gpt-5",
  });

  await session.sendAndWait({ prompt: "Let's discuss TypeScript generics" });

  // Session ID is preserved
  console.log(session.sessionId); // "user-123-conversation"

  // Destroy session but keep data on disk
  await session.destroy();
  await client.stop();
}

// --- Resuming a session ---
const client = new SessionClient();
await client.start();

// Resume the previous session
const session = await client.resumeSession("user-123-conversation");

// Previous context is restored
const reply = await session.sendAndWait({ prompt: "What were we discussing?" });
// AI remembers the TypeScript generics discussion
console.log(reply?.data.content);

// --- Getting session history ---
const messages = await session.getMessages();
for (const msg of messages) {
  console.log(`[${msg.type}]`, msg.data);
}

await session.destroy();

// --- Listing available sessions ---
const sessions = await client.listSessions();
console.log(sessions);
// [
//   { sessionId: "user-123-conversation", ... },
// ]

// --- Deleting a session permanently ---
// Remove session and all its data from disk
await client.deleteSession("user-123-conversation");

await client.stop();
console.log("done");
