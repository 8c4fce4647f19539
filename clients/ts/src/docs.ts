/**
 * Documents of a space and the op payload of the reference client
 * (`sddsf.client.device`): a document's id is derived from its name, and an
 * op's plaintext is `E({"n": name, "u": [yjs_update, ...]})`.
 *
 * docs/protocol.md §21 leaves the payload format unspecified; this is the
 * format Python devices write and read, so the TypeScript client uses it too.
 */

import { bytesEqual } from "./bytes.js";
import { decode, encode, isMap } from "./cbor.js";
import { UsageError, ProofError } from "./errors.js";
import * as labels from "./labels.js";
import { taggedHash } from "./labels.js";
import { MAX_DOC_NAME } from "./snapshot.js";
import { codePoints } from "./schema.js";

/** Every device names a document the same way: a 16-byte hash of (space, name). */
export function docIdFor(spaceId: Uint8Array, name: string): Uint8Array {
  return taggedHash(labels.DOC_ID, spaceId, name).slice(0, 16);
}

/** The decrypted payload of an op: the document's name and its Yjs updates. */
export interface OpPayload {
  readonly name: string;
  readonly updates: readonly Uint8Array[];
}

/**
 * The plaintext of an op carrying `updates` to the document `name`.
 *
 * @throws UsageError a name of 0 or more than 256 characters.
 */
export function encodePayload(name: string, updates: readonly Uint8Array[]): Uint8Array {
  if (!name || codePoints(name) > MAX_DOC_NAME) throw new UsageError(`a document name has 1 to ${MAX_DOC_NAME} characters`);
  return encode(new Map<string, string | Uint8Array[]>([["n", name], ["u", [...updates]]]));
}

/**
 * Parse an op's plaintext and check it names the op's document, as the
 * reference client does before applying anything.
 *
 * @throws DecodeError a plaintext that is not canonical; ProofError a payload that is not `{"n": name, "u": [...]}` or whose
 *   name does not hash to the op's doc id.
 */
export function decodePayload(plaintext: Uint8Array, spaceId: Uint8Array, docId: Uint8Array, offset?: number): OpPayload {
  const body = decode(plaintext);
  const name = isMap(body) ? body.get("n") : undefined;
  const updates = isMap(body) ? body.get("u") : undefined;
  if (typeof name !== "string" || !Array.isArray(updates) || !bytesEqual(docIdFor(spaceId, name), docId)) {
    throw new ProofError(`op${offset === undefined ? "" : ` at offset ${offset}`} has a malformed payload`);
  }
  return { name, updates: updates.filter((u): u is Uint8Array => u instanceof Uint8Array) };
}
