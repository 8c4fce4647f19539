// The bundle's bytes by package (minified, and gzip -9): the same build as
// `npm run build`, split into one chunk per package and not written to disk.
// Run after building clients/ts: node scripts/by-package.mjs
import { gzipSync } from "node:zlib";

import { build } from "vite";

const result = await build({
  configFile: "vite.config.ts",
  logLevel: "silent",
  build: {
    write: false,
    rollupOptions: {
      output: {
        manualChunks(id) {
          const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(id);
          if (m) return m[1];
          return id.includes("/clients/ts/") ? "@sddsf/client" : undefined;
        },
      },
    },
  },
});
const rows = [];
for (const r of Array.isArray(result) ? result : [result]) {
  for (const o of r.output) {
    if (o.type !== "chunk") continue;
    rows.push([o.name, o.code.length, gzipSync(o.code, { level: 9 }).length]);
  }
}
rows.sort((a, b) => b[1] - a[1]);
for (const [name, size, gz] of rows) console.log(`${name.padEnd(32)} ${String(size).padStart(9)} ${String(gz).padStart(9)}`);
