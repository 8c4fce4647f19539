// A stock y-websocket client, as an editor (CodeMirror, TipTap...) would use it,
// for tests/client/test_bridge.py.
//
//   node client.mjs SERVER_URL ROOM TOKEN INSERT WAIT_FOR
//
// Connects with `params: { token }`, inserts INSERT at the end of the Y.Text
// "text" once synced, and exits 0 when the text contains WAIT_FOR. Prints one
// JSON object per line: {"event": "synced" | "inserted" | "text" | "closed" |
// "seen", ...}. Bounded: exits 2 after 90 s.
import WebSocket from "ws";
import { WebsocketProvider } from "y-websocket";
import * as Y from "yjs";

const [serverUrl, room, token, insert, waitFor] = process.argv.slice(2);
const say = (event, fields = {}) => console.log(JSON.stringify({ event, ...fields }));

const doc = new Y.Doc();
const text = doc.getText("text");
const provider = new WebsocketProvider(serverUrl, room, doc, {
  params: { token },
  WebSocketPolyfill: WebSocket,
  disableBc: true,
});

const timer = setTimeout(() => {
  say("timeout", { text: text.toString() });
  process.exit(2);
}, 90_000);

function finish() {
  if (!text.toString().includes(waitFor)) return;
  say("seen", { text: text.toString() });
  clearTimeout(timer);
  provider.destroy();
  process.exit(0);
}

let inserted = false;
provider.on("sync", (synced) => {
  if (!synced || inserted) return;
  say("synced", { text: text.toString() });
  inserted = true;
  text.insert(text.length, insert);
  say("inserted", { text: text.toString() });
  finish();
});
provider.on("connection-close", (event) => {
  say("closed", { code: event?.code ?? null, reason: event?.reason ?? "" });
});
text.observe(() => {
  say("text", { text: text.toString() });
  finish();
});
