/**
 * The security controller seen from a device (the counterpart of
 * `sddsf.client.controller` and `sddsf.protocol.audit`): the account's
 * devices with their trust score and factors, its alerts, and the audit log,
 * verified here.
 *
 * The audit log is an RFC 9162 Merkle log of the account's security events,
 * its heads signed by the relay's tree-head key under the log id
 * `"sddsf/audit/" + account_id`. {@link verifyAuditLog} checks, as the Python
 * client does: every entry the relay serves hashes to the signed root; every
 * head this device verified before is a prefix of the log (an event dropped
 * or rewritten after it was shown fails here); the log never shrinks
 * (`log_rollback`); it grew consistently from the largest stored head; and
 * every device-created entry carries a valid signature of a device the
 * account ever had.
 *
 * Devices and alerts are what the relay says (its controller's view); they
 * are shown, never trusted for a decision.
 */

import { b64, bytesEqual, unb64, utf8 } from "./bytes.js";
import { decode, isMap, type CborValue, type DecodeLimits } from "./cbor.js";
import { AuthorizationError, Code, DecodeError, ProofError, SddsfError } from "./errors.js";
import * as labels from "./labels.js";
import { labelled } from "./labels.js";
import { leafHash, MerkleTree } from "./merkle.js";
import type { RegistryState } from "./registry.js";
import { decodeSigned, expectMap, versionOfMap, type Fields } from "./schema.js";
import { checkProgress, type TreeHead } from "./treehead.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

/** The audit entry format version. */
export const AUDIT_VERSION = 1;
/** The device report format version. */
export const REPORT_VERSION = 1;
/** Largest audit entry. */
export const MAX_ENTRY = 8192;
/** Largest device report. */
export const MAX_REPORT = 4096;

const ENTRY_LIMITS: DecodeLimits = Object.freeze({ maxSize: MAX_ENTRY, maxDepth: 4, maxItems: 64 });
const REPORT_LIMITS: DecodeLimits = Object.freeze({ maxSize: MAX_REPORT, maxDepth: 4, maxItems: 32 });
const ENTRY_FIELDS = ["v", "account", "ts", "kind", "device", "data", "report"] as const;
const REPORT_FIELDS = ["v", "account", "device", "ts", "kind", "data"] as const;

/** Kinds of audit event. */
export const AUDIT_KINDS = ["device_added", "device_revoked", "device_recovered", "registry_policy", "registry_entry",
  "key_rotation", "session", "posture", "report", "alert", "alert_ack", "policy",
  "membership"] as const;
export type AuditKind = (typeof AUDIT_KINDS)[number];

const REPORT_DATA: Readonly<Record<string, readonly string[]>> = {
  posture: ["os", "os_version", "app_version", "package_hash", "key_storage", "rooted", "attestation"],
  pairing: ["outcome"],
  tombstones: ["subject", "count", "since"],
};
const CHOICES: Readonly<Record<string, readonly string[]>> = {
  key_storage: ["keyring", "passphrase", "plaintext"],
  rooted: ["yes", "no", "unknown"],
  outcome: ["started", "completed", "failed", "sas_mismatch", "expired"],
};

/** The log id under which the relay signs the account's audit tree heads. */
export function auditLogId(accountId: Uint8Array): Uint8Array {
  const prefix = utf8("sddsf/audit/");
  const out = new Uint8Array(prefix.length + accountId.length);
  out.set(prefix);
  out.set(accountId, prefix.length);
  return out;
}

/** A decoded audit entry. */
export interface AuditEntry {
  readonly account: Uint8Array;
  readonly ts: bigint;
  readonly kind: AuditKind;
  /** The device the event is about (empty for account-level events). */
  readonly device: Uint8Array;
  readonly data: ReadonlyMap<string, string | number | bigint | boolean | Uint8Array>;
  /** The device-signed report that created the event (empty when the relay created it). */
  readonly report: Uint8Array;
  readonly raw: Uint8Array;
}

/** A decoded (not yet verified) device report. */
export interface DeviceReport {
  readonly account: Uint8Array;
  readonly device: Uint8Array;
  readonly ts: bigint;
  readonly kind: "posture" | "pairing" | "tombstones";
  readonly bodyBytes: Uint8Array;
  readonly signature: Uint8Array;
}

function choice(f: Fields, key: string): string {
  const value = f.str(key, 32);
  if (!CHOICES[key]!.includes(value)) {
    throw new DecodeError(`device report: ${key} must be one of ${CHOICES[key]!.join(", ")}, not '${value}'`);
  }
  return value;
}

/**
 * Decode an audit entry.
 *
 * @throws DecodeError malformed, too large (`too_large`), an unknown kind or version (`unsupported_version`).
 */
export function decodeAuditEntry(raw: Uint8Array): AuditEntry {
  if (raw.length > MAX_ENTRY) throw new DecodeError(`audit entry of ${raw.length} bytes exceeds ${MAX_ENTRY}`, Code.TOO_LARGE);
  const value = decode(raw, ENTRY_LIMITS);
  versionOfMap(value, AUDIT_VERSION, "audit entry");
  const f = expectMap(value, "audit entry", ENTRY_FIELDS);
  const kind = f.str("kind", 32);
  if (!(AUDIT_KINDS as readonly string[]).includes(kind)) {
    throw new DecodeError(`audit entry kind '${kind}' is unknown`, Code.UNSUPPORTED_VERSION);
  }
  const data = f.raw("data");
  if (!isMap(data) || ![...data].every(([k, v]) => typeof k === "string" && (typeof v === "string" ||
    typeof v === "number" || typeof v === "bigint" || typeof v === "boolean" || v instanceof Uint8Array))) {
    throw new DecodeError("audit entry data: a map of text keys to int, text, bytes or bool");
  }
  const device = f.bytes("device", { maxSize: 32 });
  if (device.length !== 0 && device.length !== 32) throw new DecodeError("audit entry device: empty or a 32-byte device id");
  return { account: f.bytes("account", { size: 32 }), ts: f.u64("ts"), kind: kind as AuditKind, device,
    data: data as Map<string, string | number | bigint | boolean | Uint8Array>, report: f.bytes("report", { maxSize: MAX_REPORT }),
    raw: new Uint8Array(raw) };
}

/**
 * Decode a device report's structure (its signature is checked by {@link verifyReportSignature}).
 *
 * @throws DecodeError malformed, too large, an unknown kind or an unsupported version.
 */
export function decodeReport(data: Uint8Array): DeviceReport {
  const { fields: f, bodyBytes, signature } = decodeSigned(data, "device report", REPORT_VERSION, REPORT_FIELDS, REPORT_LIMITS);
  const kind = f.str("kind", 32);
  const shape = REPORT_DATA[kind];
  if (shape === undefined) throw new DecodeError(`device report kind '${kind}' is unknown`, Code.UNSUPPORTED_VERSION);
  const d = expectMap(f.raw("data"), `device ${kind} report data`, shape);
  if (kind === "posture") {
    if (d.str("attestation", 32) !== "none") {
      throw new DecodeError("posture attestation is not supported by this version (only 'none')", Code.UNSUPPORTED_VERSION);
    }
    d.str("os", 64);
    d.str("os_version", 128);
    d.str("app_version", 64);
    d.bytes("package_hash", { size: 32 });
    choice(d, "key_storage");
    choice(d, "rooted");
  } else if (kind === "pairing") {
    choice(d, "outcome");
  } else {
    d.bytes("subject", { size: 32 });
    d.int("count", 1, 1_000_000);
    d.u64("since");
  }
  return { account: f.bytes("account", { size: 32 }), device: f.bytes("device", { size: 32 }), ts: f.u64("ts"),
    kind: kind as DeviceReport["kind"], bodyBytes, signature };
}

/**
 * Check a logged report's signature by any device the registry ever had (an
 * audit entry stays valid after its author is revoked).
 *
 * @throws DecodeError; AuthorizationError `unknown_device`; SignatureError.
 */
export function verifyReportSignature(data: Uint8Array, registry: RegistryState): DeviceReport {
  const report = decodeReport(data);
  const record = registry.device(report.device);
  if (!bytesEqual(report.account, registry.accountId) || record === undefined) {
    throw new AuthorizationError("a logged report names a device this account never had", Code.UNKNOWN_DEVICE);
  }
  record.publicId.signingKey.verify(labelled(labels.DEVICE_REPORT_SIG, report.bodyBytes), report.signature);
  return report;
}

function checkEntry(entry: AuditEntry, index: number, registry: RegistryState): void {
  if (!bytesEqual(entry.account, registry.accountId)) throw new ProofError(`audit entry ${index} belongs to another account`);
  if (entry.report.length === 0) {
    if (entry.kind === "posture" || entry.kind === "report") {
      throw new ProofError(`audit entry ${index} (${entry.kind}) lacks the device's signed report`);
    }
    return;
  }
  let report: DeviceReport;
  try {
    report = verifyReportSignature(entry.report, registry);
  } catch (e) {
    if (!(e instanceof SddsfError)) throw e;
    throw new ProofError(`audit entry ${index}: the device report does not verify (${e.message})`);
  }
  if (!bytesEqual(report.device, entry.device)) {
    throw new ProofError(`audit entry ${index} attributes a device's report to another device`);
  }
}

/**
 * Verify the whole audit log the relay served against its signed head and the
 * heads this device stored before (signature-checked by the caller).
 *
 * @param entries every entry, seq 0 .. `head.size - 1`.
 * @param consistency the relay's consistency proof from the largest stored head to `head`.
 * @throws ProofError `log_rollback` (the log shrank), `proof_invalid` (the
 *   entries do not hash to the signed root; a stored head is not a prefix; a
 *   bad consistency proof; a device report that does not verify). DecodeError a malformed entry.
 */
export function verifyAuditLog(entries: readonly Uint8Array[], head: TreeHead, stored: readonly TreeHead[],
  registry: RegistryState, consistency: readonly Uint8Array[] = []): [AuditEntry[], MerkleTree] {
  if (BigInt(entries.length) !== head.size) {
    throw new ProofError(`the relay sent ${entries.length} audit entries for a signed log of ${head.size}`);
  }
  const decoded = entries.map(decodeAuditEntry);
  decoded.forEach((e, i) => checkEntry(e, i, registry));
  const tree = new MerkleTree(entries.map(leafHash));
  if (!bytesEqual(tree.root(), head.root)) {
    throw new ProofError("the audit entries do not hash to the relay's signed tree head: the relay rewrote or dropped an event");
  }
  let latest: TreeHead | null = null;
  for (const old of stored) {
    if (old.size > head.size) {
      throw new ProofError(`the audit log went back from ${old.size} to ${head.size} entries; the relay dropped events`,
        Code.LOG_ROLLBACK);
    }
    if (old.size > 0n && !bytesEqual(tree.root(old.size), old.root)) {
      throw new ProofError(`the audit log is no longer an extension of the head of size ${old.size} this device verified: ` +
        "the relay dropped or rewrote an event");
    }
    if (latest === null || old.size > latest.size) latest = old;
  }
  if (latest !== null && latest.size > 0n && latest.size < head.size) checkProgress(latest, head, consistency);
  return [decoded, tree];
}

/** What {@link verifyAuditLog} checked, for a person. */
export interface AuditCheck {
  readonly entries: readonly AuditEntry[];
  /** The verified head. */
  readonly head: TreeHead;
  /** Heads verified before that the log still extends. */
  readonly headsChecked: number;
}

// ------------------------------------------------------------ relay answers

/** One trust factor: its name, points and what it is about. */
export interface TrustFactor {
  readonly name: string;
  readonly points: number;
  readonly detail: string;
}

/** A device as the relay's controller sees it (unverified: shown, never trusted). */
export interface DeviceTrust {
  readonly deviceId: Uint8Array;
  readonly name: string;
  readonly status: string;
  readonly score: number | null;
  readonly access: string | null;
  readonly quarantined: boolean;
  readonly factors: readonly TrustFactor[];
  readonly posture: Json | null;
}

/** An alert of the relay's controller (unverified). */
export interface ControllerAlert {
  readonly alertId: Uint8Array;
  readonly device: Uint8Array;
  readonly rule: string;
  readonly severity: string;
  readonly message: string;
  readonly quarantine: boolean;
  readonly createdMs: number;
  readonly ackedMs: number | null;
}

const str = (x: unknown, what: string): string => {
  if (typeof x !== "string") throw new DecodeError(`the relay sent a malformed ${what}`);
  return x;
};

/** Parse `GET /v1/controller/devices`. */
export function parseDevices(body: Json): DeviceTrust[] {
  if (!Array.isArray(body?.devices)) throw new DecodeError("the relay sent a malformed device list");
  return (body.devices as Json[]).map((d) => ({
    deviceId: unb64(str(d.device_id, "device id"), "device_id", 32), name: str(d.name, "device name"),
    status: str(d.status, "device status"), score: typeof d.score === "number" ? d.score : null,
    access: typeof d.access === "string" ? d.access : null, quarantined: d.quarantined === true,
    factors: (Array.isArray(d.factors) ? d.factors as Json[] : []).map((f) => ({ name: str(f.name, "factor"),
      points: Number(f.points), detail: typeof f.detail === "string" ? f.detail : "" })),
    posture: d.posture ?? null,
  }));
}

/** Parse `GET /v1/controller/alerts`. */
export function parseAlerts(body: Json): ControllerAlert[] {
  if (!Array.isArray(body?.alerts)) throw new DecodeError("the relay sent a malformed alert list");
  return (body.alerts as Json[]).map((a) => ({
    alertId: unb64(str(a.alert_id, "alert id"), "alert_id", 16), device: unb64(str(a.device, "alert device"), "device"),
    rule: str(a.rule, "alert rule"), severity: str(a.severity, "alert severity"), message: str(a.message, "alert message"),
    quarantine: a.quarantine === true, createdMs: Number(a.created_ms), ackedMs: typeof a.acked_ms === "number" ? a.acked_ms : null,
  }));
}

/** Parse one page of `GET /v1/controller/audit`: `[[seq, entry]...], head bytes`. */
export function parseAuditPage(body: Json): [[number, Uint8Array][], Uint8Array] {
  if (!Array.isArray(body?.entries) || typeof body?.tree_head?.tree_head !== "string") {
    throw new DecodeError("the relay sent a malformed audit page");
  }
  const rows = (body.entries as Json[]).map((e): [number, Uint8Array] => {
    if (!Number.isSafeInteger(e.seq) || e.seq < 0) throw new DecodeError("the relay sent a malformed audit seq");
    return [e.seq as number, unb64(str(e.entry, "audit entry"), "audit entry")];
  });
  return [rows, unb64(body.tree_head.tree_head, "tree_head")];
}

/** Entries as the relay serves them (tests build pages with it). */
export function auditPageJson(rows: readonly [number, Uint8Array][], head: Uint8Array): Json {
  return { entries: rows.map(([seq, e]) => ({ seq, entry: b64(e) })), tree_head: { tree_head: b64(head) },
    next_start: rows.length ? rows[rows.length - 1]![0] + 1 : 0 };
}

/** Whether `value` is a CBOR list of byte strings (stored heads). */
export function isByteList(value: CborValue): value is Uint8Array[] {
  return Array.isArray(value) && value.every((v) => v instanceof Uint8Array);
}
