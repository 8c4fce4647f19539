/**
 * `@sddsf/client`: the device side of the SDDSF protocol in TypeScript.
 *
 * Await {@link crypto.ready} once before calling anything that hashes,
 * signs, verifies or encrypts.
 */

export * as approval from "./approval.js";
export * as auth from "./auth.js";
export * as bootstrap from "./bootstrap.js";
export * as bytes from "./bytes.js";
export * as cbor from "./cbor.js";
export * as controller from "./controller.js";
export * as crypto from "./crypto.js";
export * as device from "./device.js";
export * as docs from "./docs.js";
export * as envelope from "./envelope.js";
export * as errors from "./errors.js";
export * as identity from "./identity.js";
export * as keypackage from "./keypackage.js";
export * as kv from "./kv.js";
export * as labels from "./labels.js";
export * as limits from "./limits.js";
export * as members from "./members.js";
export * as membership from "./membership.js";
export * as merkle from "./merkle.js";
export * as pairing from "./pairing.js";
export * as payload from "./payload.js";
export * as records from "./records.js";
export * as registry from "./registry.js";
export * as rules from "./rules.js";
export * as schema from "./schema.js";
export * as sharing from "./sharing.js";
export * as snapshot from "./snapshot.js";
export * as spake2 from "./spake2.js";
export * as store from "./store.js";
export * as treehead from "./treehead.js";
export * as vault from "./vault.js";
export * as vv from "./vv.js";
export * as clock from "./clock.js";

export * as live from "./live.js";
export * as relay from "./relay.js";
export * as sync from "./sync.js";
export * as ydocs from "./ydocs.js";
export { Code, SddsfError } from "./errors.js";
