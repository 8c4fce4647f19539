/**
 * Documents of a space (`sddsf.client.device`): a document's id is derived
 * from its name, and each op's payload (§8.11, `./payload.js`) names the
 * document it edits, which must hash to the op's doc id.
 */

import { bytesEqual } from "./bytes.js";
import { ProofError, SddsfError, UsageError } from "./errors.js";
import * as labels from "./labels.js";
import { taggedHash } from "./labels.js";
import { decodePayload, type Edit, type PartsReader } from "./payload.js";
import { codePoints } from "./schema.js";
import { MAX_DOC_NAME } from "./snapshot.js";
import { toHex } from "./bytes.js";
import type { OpEnvelope } from "./envelope.js";

/** Every device names a document the same way: a 16-byte hash of (space, name). */
export function docIdFor(spaceId: Uint8Array, name: string): Uint8Array {
  return taggedHash(labels.DOC_ID, spaceId, name).slice(0, 16);
}

/** The decrypted payload of an op (or of the multi-part edit it completes): the document's name and its updates. */
export interface OpPayload {
  readonly name: string;
  readonly updates: readonly Uint8Array[];
}

/**
 * Check a document name a local caller gives.
 *
 * @throws UsageError a name of 0 or more than 256 characters.
 */
export function checkDocName(name: string): void {
  if (!name || codePoints(name) > MAX_DOC_NAME) throw new UsageError(`a document name has 1 to ${MAX_DOC_NAME} characters`);
}

/**
 * The edit an op completes (its own for a one-op edit, the joined one for a
 * multi-part edit's last part), or null for a part that does not complete one
 * yet; as the reference client's pull (`_edit_body`), any fault of the
 * payload is the relay's or the author's and refuses the pull.
 *
 * @throws ProofError `proof_invalid`: a payload that does not decode, does not
 *   continue its author's open assembly, or whose name does not hash to the op's doc id.
 */
export function editOf(parts: PartsReader, spaceId: Uint8Array, env: OpEnvelope, offset: number,
  plaintext: Uint8Array): OpPayload | null {
  let edit: Edit | null;
  try {
    edit = parts.feed(toHex(env.header.author), env.header.seq, env.header.doc, decodePayload(plaintext));
  } catch (e) {
    if (e instanceof SddsfError) throw new ProofError(`op at offset ${offset} has a malformed payload: ${e.message}`);
    throw e;
  }
  if (edit === null) return null;
  if (!bytesEqual(docIdFor(spaceId, edit.name), env.header.doc)) {
    throw new ProofError(`op at offset ${offset} has a malformed payload: its document name does not match its document id`);
  }
  return { name: edit.name, updates: edit.updates };
}
