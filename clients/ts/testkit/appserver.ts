/**
 * Serves the web app (clients/web/dist) and the relay from ONE origin, as a deployment
 * puts both behind one reverse proxy: static files, and every /v1/ request
 * (HTTP and the WebSocket upgrade) forwarded to a real `sddsf relay serve`.
 * A test may rewrite the relay's JSON answers on the way (`tamper`), to play
 * a relay that rewrites history.
 */

import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { readFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import type { AddressInfo } from "node:net";

import { APP_DIST } from "./kit.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

const TYPES: Record<string, string> = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8" };

/** The app's origin in front of a relay. */
export class AppServer {
  /** Rewrites a GET answer of the relay (url, parsed JSON) → the JSON to serve, or null to pass it on. */
  tamper: ((url: string, body: Json) => Json | null) | null = null;

  private constructor(private readonly server: Server, readonly url: string) {}

  /** Listen on a free loopback port serving `dist` (the web app's), forwarding /v1/ and /healthz to `relayUrl`. */
  static async start(relayUrl: string, dist = APP_DIST): Promise<AppServer> {
    const relay = new URL(relayUrl);
    let self: AppServer | null = null;
    const server = createServer((req, res) => {
      if (req.url?.startsWith("/v1/") || req.url === "/healthz") forward(req, res, relay, self!);
      else serveFile(dist, req, res);
    });
    server.on("upgrade", (req, socket, head) => {
      // The live channel: a raw tunnel to the relay (the WebSocket handshake passes through).
      const upstream = connect(Number(relay.port), relay.hostname, () => {
        const lines = [`${req.method} ${req.url} HTTP/1.1`, ...Object.entries(req.headers).map(([k, v]) =>
          `${k}: ${k === "host" ? relay.host : Array.isArray(v) ? v.join(", ") : v}`), "", ""];
        upstream.write(lines.join("\r\n"));
        upstream.write(head);
        upstream.pipe(socket);
        socket.pipe(upstream);
      });
      upstream.on("error", () => socket.destroy());
      socket.on("error", () => upstream.destroy());
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    self = new AppServer(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    return self;
  }

  /** Stop listening. */
  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

function serveFile(dist: string, req: IncomingMessage, res: ServerResponse): void {
  const path = req.url === "/" || req.url === undefined ? "/index.html" : req.url.split("?")[0]!;
  const ext = path.slice(path.lastIndexOf("."));
  // index.html and the hashed files under assets/ (no "..": each segment is a plain name).
  if (!/^(\/assets)?\/[a-z0-9_-][a-z0-9_.-]*$/i.test(path) || TYPES[ext] === undefined) {
    res.writeHead(404).end();
    return;
  }
  try {
    const body = readFileSync(join(dist, path));
    res.writeHead(200, { "content-type": TYPES[ext]!, "cache-control": "no-store" }).end(body);
  } catch {
    res.writeHead(404).end();
  }
}

function forward(req: IncomingMessage, res: ServerResponse, relay: URL, app: AppServer): void {
  const chunks: Buffer[] = [];
  req.on("data", (c: Buffer) => chunks.push(c));
  req.on("end", () => {
    const up = request({ host: relay.hostname, port: relay.port, method: req.method, path: req.url,
      headers: { ...req.headers, host: relay.host } }, (answer) => {
      const body: Buffer[] = [];
      answer.on("data", (c: Buffer) => body.push(c));
      answer.on("end", () => {
        let out = Buffer.concat(body);
        const rewrite = app.tamper;
        if (rewrite !== null && req.method === "GET" && answer.statusCode === 200) {
          const changed = rewrite(req.url!, JSON.parse(out.toString("utf8")));
          if (changed !== null) out = Buffer.from(JSON.stringify(changed));
        }
        const headers = { ...answer.headers, "content-length": String(out.length) };
        delete headers["transfer-encoding"];
        res.writeHead(answer.statusCode ?? 502, headers).end(out);
      });
    });
    up.on("error", () => res.writeHead(502).end());
    up.end(Buffer.concat(chunks));
  });
}
