/** The package as an app gets it: packed and installed the way the README says. */

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const PACKAGE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

test("the packed tarball installs and imports, and every map names a file it ships", () => {
  const app = mkdtempSync(join(tmpdir(), "sessions-app-"));
  try {
    execFileSync("npm", ["pack", "--pack-destination", app], { cwd: PACKAGE_DIR, stdio: "pipe" });
    const tarball = readdirSync(app).find((name) => name.endsWith(".tgz"));
    assert.ok(tarball, "npm pack wrote no tarball");
    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", private: true }));
    execFileSync("npm", ["install", "--offline", "--no-audit", "--no-fund", `./${tarball}`], {
      cwd: app,
      stdio: "pipe",
    });
    const script =
      "import { SessionClient } from 'redis-sessions-client'; console.log(typeof SessionClient)";
    const out = execFileSync(process.execPath, ["--input-type=module", "-e", script], { cwd: app });
    assert.equal(out.toString().trim(), "function");

    const dist = join(app, "node_modules", "redis-sessions-client", "dist");
    const maps = readdirSync(dist).filter((name) => name.endsWith(".map"));
    assert.ok(maps.length > 0, "no source maps shipped");
    for (const name of maps) {
      const map = JSON.parse(readFileSync(join(dist, name), "utf8")) as { sources: string[] };
      for (const source of map.sources) {
        assert.ok(existsSync(resolve(dist, source)), `${name} names ${source}, not in the package`);
      }
    }
  } finally {
    rmSync(app, { recursive: true, force: true });
  }
});
