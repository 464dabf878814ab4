/** examples/persisting_sessions.ts (compiled by `npm run build:tests`) runs to completion
 * against a real `sessionctl dev`, configured only by SESSIONS_URL and SESSIONS_API_KEY. */

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";

import { SessionClient } from "redis-sessions-client";

import { type DevServer, startDevServer } from "./harness.js";

const EXAMPLE = fileURLToPath(new URL("../examples/persisting_sessions.js", import.meta.url));
let server: DevServer;

before(async () => {
  server = await startDevServer();
});
after(async () => {
  await server?.stop();
});

function run(env: NodeJS.ProcessEnv): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [EXAMPLE], { env, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.on("exit", (code) => resolve({ code, output }));
  });
}

test("the TypeScript recipe runs with only the import and constructor changed", async () => {
  const env = { ...process.env, SESSIONS_URL: server.url, SESSIONS_API_KEY: server.apiKey };
  for (let round = 0; round < 2; round++) {
    const { code, output } = await run(env);
    assert.equal(code, 0, output);
    const lines = output.trim().split("\n");
    assert.equal(lines[0], "user-123-conversation");
    assert.match(output, /Let's discuss TypeScript generics/); // the reply after resuming
    assert.match(output, /\[user\.message\] \{ content: 'What were we discussing\?' \}/);
    assert.match(output, /\[assistant\.message\]/);
    assert.match(output, /sessionId: 'user-123-conversation'/);
    assert.equal(lines.at(-1), "done");
  }
  const client = new SessionClient({ baseUrl: server.url, apiKey: server.apiKey });
  assert.deepEqual(await client.listSessions(), []); // it deletes what it made
});
