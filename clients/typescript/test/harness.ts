/**
 * The real service for the tests: `sessionctl dev` (API, worker and an embedded Redis) from the
 * repository's .venv, on a free port with a private data folder, and a small HTTP proxy in front
 * of it that can answer 502 or cut event streams, as an ingress does while pods roll.
 */

import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = fileURLToPath(new URL("../../../../", import.meta.url));

export function sessionctl(): string {
  const path = process.env.SESSIONCTL ?? join(REPO_ROOT, ".venv", "bin", "sessionctl");
  if (!existsSync(path)) throw new Error(`no sessionctl at ${path}: run \`make install\` first (or set SESSIONCTL)`);
  return path;
}

export async function freePort(): Promise<number> {
  const [port = 0] = await freePorts(1);
  return port;
}

/** `count` distinct free ports: held open together while they are picked, so that none is
 * picked twice. */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<net.Server>((resolve, reject) => {
          const server = net.createServer();
          server.once("error", reject);
          server.listen(0, "127.0.0.1", () => resolve(server));
        }),
    ),
  );
  const ports = servers.map((server) => {
    const address = server.address();
    return typeof address === "object" && address ? address.port : 0;
  });
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  return ports;
}

export interface DevServer {
  url: string;
  apiKey: string;
  dataDir: string;
  stop(): Promise<void>;
}

/** `sessionctl dev` on a free port; resolves once `/readyz` answers 200. */
export async function startDevServer(): Promise<DevServer> {
  // the embedded Redis's port too: one sessionctl picks itself may be the API's, just freed
  const [port = 0, redisPort = 0] = await freePorts(2);
  const dataDir = mkdtempSync(join(tmpdir(), "sessions-ts-"));
  const apiKey = `sk_dev_${randomBytes(16).toString("hex")}`;
  const env: NodeJS.ProcessEnv = { ...process.env, SESSIONS_LOG_LEVEL: "WARNING", SESSIONS_RATE_LIMIT_PER_SECOND: "0" };
  delete env.SESSIONS_REDIS_URL;
  const child: ChildProcess = spawn(
    sessionctl(),
    ["dev", "--port", String(port), "--redis-port", String(redisPort), "--data-dir", dataDir, "--api-key", apiKey],
    { env, stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  child.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const url = `http://127.0.0.1:${port}`;
  const stop = async (): Promise<void> => {
    if (child.exitCode === null) child.kill("SIGTERM");
    const killer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(killer);
    rmSync(dataDir, { recursive: true, force: true });
  };
  const started = Date.now();
  while (Date.now() - started < 60_000) {
    if (child.exitCode !== null) break;
    try {
      if ((await fetch(`${url}/readyz`)).status === 200) return { url, apiKey, dataDir, stop };
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await stop();
  throw new Error(`sessionctl dev did not start:\n${output}`);
}

/** An answer the proxy gives instead of the service's. */
export interface Failure {
  status: number;
  body: string;
  type: string;
  headers?: Record<string, string>;
}

export interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  status: number;
}

/** A proxy in front of `target`. `fail(req)` may return a status to answer instead (once per
 * call it is asked), with `headers` of its own (a redirect's `Location`); `cutAfter(req)` may return a number of SSE events after which the stream
 * is cut (the connection destroyed); a request `hold(req)` is true for is never answered (as
 * by a hung upstream) until the proxy stops. */
export class Proxy {
  readonly seen: Seen[] = [];
  fail: (req: http.IncomingMessage) => Failure | undefined = () => undefined;
  cutAfter: (req: http.IncomingMessage) => number | undefined = () => undefined;
  hold: (req: http.IncomingMessage) => boolean = () => false;
  /** SSE frames of event streams that are not passed on (as live copies lost). */
  dropFrame: (frame: string) => boolean = () => false;
  /** Changes a request before it is passed on (its URL, its headers). */
  rewrite: (req: http.IncomingMessage) => void = () => undefined;
  /** Milliseconds the service's answer to a request is kept before it is passed on (a slow
   * way back): the request has been carried out all the same. */
  delay: (req: http.IncomingMessage) => number = () => 0;
  private server: http.Server | undefined;
  url = "";

  constructor(private readonly target: string) {}

  async start(): Promise<void> {
    const port = await freePort();
    this.server = http.createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve) => this.server?.listen(port, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${port}`;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    this.rewrite(req);
    if (this.hold(req)) {
      this.seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, status: 0 });
      req.resume();
      return;
    }
    const failure = this.fail(req);
    if (failure) {
      this.seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, status: failure.status });
      req.resume();
      res.writeHead(failure.status, { "content-type": failure.type, ...failure.headers });
      res.end(failure.body);
      return;
    }
    const cut = this.cutAfter(req);
    const upstream = http.request(
      `${this.target}${req.url ?? "/"}`,
      { method: req.method, headers: { ...req.headers, host: new URL(this.target).host } },
      (answer) => {
        this.seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, status: answer.statusCode ?? 0 });
        const wait = this.delay(req);
        if (wait > 0) setTimeout(() => this.passOn(req, res, answer, cut), wait).unref();
        else this.passOn(req, res, answer, cut);
      },
    );
    upstream.on("error", () => res.destroy());
    req.pipe(upstream);
  }

  /** Pass the service's `answer` on, its event streams' frames dropped or cut as told. */
  private passOn(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    answer: http.IncomingMessage,
    cut: number | undefined,
  ): void {
    if (res.destroyed) {
      answer.resume(); // the client gave up waiting
      return;
    }
    res.writeHead(answer.statusCode ?? 502, answer.headers);
    let events = 0;
    let partial = ""; // an SSE frame not yet complete
    answer.on("data", (data: Buffer) => {
      let chunk = data;
      if (req.url?.includes("/events/stream")) {
        const frames = (partial + data.toString()).split("\n\n");
        partial = frames.pop() ?? "";
        chunk = Buffer.from(frames.filter((f) => !this.dropFrame(f)).map((f) => `${f}\n\n`).join(""));
        if (chunk.length === 0) return;
      }
      events += (chunk.toString().match(/^id: /gm) ?? []).length;
      if (cut === undefined || events < cut) {
        res.write(chunk);
        return;
      }
      answer.destroy(); // the connection drops once this chunk is through
      res.write(chunk, () => res.socket?.destroy());
    });
    answer.on("end", () => res.end());
  }
}

export const BAD_GATEWAY = {
  status: 502,
  type: "text/html",
  body: "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
};
