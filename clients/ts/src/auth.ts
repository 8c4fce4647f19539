/**
 * Device authentication to a relay (docs/protocol.md §17.3; mirrors
 * `sddsf.protocol.auth`): the session-opening message and the signed-request
 * message.
 */

import { sha256 } from "./crypto.js";
import * as labels from "./labels.js";
import { labelled } from "./labels.js";

/** Size of a signed request's nonce. */
export const NONCE_SIZE = 16;

/** What a device signs to open a session: `labelled(AUTH_SESSION, relay_id, account_id, device_id, challenge)`. */
export function sessionMessage(relayId: Uint8Array, accountId: Uint8Array, deviceId: Uint8Array,
  challenge: Uint8Array): Uint8Array {
  return labelled(labels.AUTH_SESSION, relayId, accountId, deviceId, challenge);
}

/** The relay stores and signs over the hash of a bearer token, never the token. */
export function tokenHash(token: Uint8Array): Uint8Array {
  return sha256(token);
}

/**
 * What a device signs for one mutating request:
 * `labelled(REQUEST_SIG, METHOD, target, SHA-256(body), nonce, ts_ms, SHA-256(token))`,
 * `target` being the path and, if not empty, `?` and the raw query.
 */
export function requestMessage(method: string, target: string, body: Uint8Array, nonce: Uint8Array, tsMs: number | bigint,
  tokenDigest: Uint8Array): Uint8Array {
  return labelled(labels.REQUEST_SIG, method.toUpperCase(), target, sha256(body), nonce, BigInt(tsMs), tokenDigest);
}

/**
 * What a caller without a session signs with a key the registry knows
 * (§17.3.3): `labelled(REQUEST_KEY_SIG, METHOD, target, SHA-256(body), nonce,
 * ts_ms, key_id)`, `key_id` being the account id (account key) or a device id.
 */
export function keyRequestMessage(method: string, target: string, body: Uint8Array, nonce: Uint8Array, tsMs: number | bigint,
  keyId: Uint8Array): Uint8Array {
  return labelled(labels.REQUEST_KEY_SIG, method.toUpperCase(), target, sha256(body), nonce, BigInt(tsMs), keyId);
}

/**
 * What the account key signs to acknowledge alerts (and lift their
 * quarantine): the listed alerts, or with an empty list every open alert
 * created at or before `tsMs`.
 */
export function alertAckMessage(accountId: Uint8Array, tsMs: number | bigint, alertIds: readonly Uint8Array[]): Uint8Array {
  return labelled(labels.ALERT_ACK_SIG, accountId, BigInt(tsMs), [...alertIds]);
}
