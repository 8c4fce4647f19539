/**
 * k-of-n approval of device changes: proposals, approvals, vetoes, enactment
 * (docs/protocol.md §9.8; mirrors `sddsf.protocol.approval`).
 *
 * With `approvals` > 1 or `veto_window_s` > 0 in the registry policy, no single
 * device may add or revoke a device or change the policy by itself: a device
 * proposes, others approve (or veto), and once enough currently active devices
 * approved and the veto window passed, any active device enacts.
 *
 * Timestamps are uint64 on the wire and compared exactly (bigint).
 */

import { bytesEqual, toHex } from "./bytes.js";
import { isInt, isMap, type CborValue } from "./cbor.js";
import { AuthorizationError, Code, DecodeError, RegistryError, SignatureError } from "./errors.js";
import { DevicePublic, ID_SIZE } from "./identity.js";
import * as labels from "./labels.js";
import { labelled } from "./labels.js";
import type { ProtocolLimits } from "./limits.js";
import type { RegistryEntry, RegistryState } from "./registry.js";
import { expectMap, type Fields } from "./schema.js";

/** Open proposals per account: bounded state, bounded spam. */
export const MAX_PENDING = 16;
const DAY_S = 86_400;
/** Known policy keys and their `[lo, hi]`; other keys are stored and ignored. */
export const POLICY_INTS: ReadonlyMap<string, readonly [number, number]> = new Map([
  ["approvals", [1, 16]],
  ["veto_window_s", [0, 30 * DAY_S]],
  ["proposal_ttl_s", [3_600, 90 * DAY_S]],
  ["max_epoch_age_s", [0, 10 * 365 * DAY_S]],
]);
const DEFAULT_TTL_S = 7 * DAY_S;

/** A policy value: booleans, integers or text. */
export type PolicyValue = boolean | number | bigint | string;
/** The registry policy map. */
export type Policy = ReadonlyMap<string, PolicyValue>;

/** What a proposal would do when enacted. */
export type ActionType = "add" | "revoke" | "policy";
/** Where a proposal is in its life. */
export type ProposalStatus = "pending" | "vetoed" | "enacted";

/** The approval settings of a registry policy. */
export interface ApprovalRules {
  readonly approvals: number;
  readonly vetoWindowMs: bigint;
  readonly ttlMs: bigint;
  /** Whether device changes by a device need a proposal. */
  readonly governed: boolean;
}

/** The change a proposal carries. */
export interface Action {
  readonly type: ActionType;
  readonly device?: DevicePublic;
  readonly name?: string;
  readonly target?: Uint8Array;
  readonly reason?: string;
  readonly policy?: Policy;
}

/** One proposal and its approvals, as the verified chain left it. */
export interface Proposal {
  /** Entry hash of the propose entry. */
  readonly id: Uint8Array;
  readonly seq: number;
  readonly ts: bigint;
  /** Approve/veto/enact entries dated after this are refused. */
  readonly expires: bigint;
  readonly proposer: Uint8Array;
  readonly action: Action;
  /** Device ids (hex) that approved it. */
  readonly approvals: ReadonlySet<string>;
  readonly status: ProposalStatus;
  readonly closedSeq: number | null;
  readonly closedBy: Uint8Array | null;
  readonly vetoReason: string;
}

/** Whether `p` is pending and not expired at `tsMs`. */
export function openAt(p: Proposal, tsMs: bigint): boolean {
  return p.status === "pending" && tsMs <= p.expires;
}

/**
 * The `policy` value: at most 64 text keys; known keys typed and bounded.
 *
 * @throws DecodeError `malformed`.
 */
export function parsePolicy(f: Fields): Map<string, PolicyValue> {
  const raw = f.raw("policy");
  if (!isMap(raw) || raw.size > 64) throw new DecodeError("registry policy: expected a map of at most 64 settings");
  const policy = new Map<string, PolicyValue>();
  for (const [k, v] of raw) {
    if (typeof k !== "string" || !(typeof v === "boolean" || isInt(v) || typeof v === "string")) {
      throw new DecodeError("registry policy: keys are text, values are bool/int/text");
    }
    const range = POLICY_INTS.get(k);
    if (range !== undefined && (!isInt(v) || BigInt(v) < BigInt(range[0]) || BigInt(v) > BigInt(range[1]))) {
      throw new DecodeError(`registry policy: ${k} must be an integer in [${range[0]}, ${range[1]}]`);
    }
    policy.set(k, v);
  }
  const rules = rulesOf(policy);
  if (rules.ttlMs <= rules.vetoWindowMs) {
    throw new DecodeError(
      "registry policy: proposal_ttl_s must exceed veto_window_s, or no proposal could ever be enacted",
    );
  }
  return policy;
}

/** Approval settings of a (checked) policy map, defaults for absent keys. */
export function rulesOf(policy: Policy): ApprovalRules {
  const get = (key: string, dflt: number): bigint => {
    const v = policy.get(key);
    return v !== undefined && isInt(v) ? BigInt(v) : BigInt(dflt);
  };
  const approvals = Number(get("approvals", 1));
  const vetoWindowMs = get("veto_window_s", 0) * 1000n;
  return { approvals, vetoWindowMs, ttlMs: get("proposal_ttl_s", DEFAULT_TTL_S) * 1000n,
    governed: approvals > 1 || vetoWindowMs > 0n };
}

/** The `device` field: `{sign, kx, name}` (keys checked, §4.4/§4.5). */
export function parseDevice(f: Fields, limits: ProtocolLimits): { publicId: DevicePublic; name: string } {
  const d = f.subMap("device", ["sign", "kx", "name"]);
  const sign = d.bytes("sign", { size: 32 });
  const kx = d.bytes("kx", { size: 32 });
  const publicId = DevicePublic.fromKeys(sign, kx);
  return { publicId, name: d.str("name", limits.maxName) };
}

const ACTION_FIELDS: Readonly<Record<ActionType, readonly string[]>> = {
  add: ["type", "device"],
  revoke: ["type", "target", "reason"],
  policy: ["type", "policy"],
};

/**
 * The type of an `action` map (decode-time: it decides the countersignature).
 *
 * @throws DecodeError not a map with a known text `type` (`malformed`).
 */
export function actionTypeOf(value: CborValue): ActionType {
  const kind = isMap(value) ? value.get("type") : undefined;
  if (kind === "add" || kind === "revoke" || kind === "policy") return kind;
  throw new DecodeError(`registry proposal: unknown action ${JSON.stringify(String(kind))} (add, revoke or policy)`);
}

function parseAction(value: CborValue, limits: ProtocolLimits): Action {
  const kind = actionTypeOf(value);
  const f = expectMap(value, `registry proposal ${kind} action`, ACTION_FIELDS[kind]);
  if (kind === "add") {
    const { publicId, name } = parseDevice(f, limits);
    return { type: kind, device: publicId, name };
  }
  if (kind === "revoke") {
    return { type: kind, target: f.bytes("target", { size: ID_SIZE }), reason: f.str("reason", 256) };
  }
  return { type: kind, policy: parsePolicy(f) };
}

/**
 * `[approvals that count now, approvals needed now]` for `p`: only active
 * devices count, never the target of a revocation; what is needed is the
 * policy's `approvals`, at most the number of devices that could approve, at
 * least one.
 */
export function tally(state: RegistryState, p: Proposal): [number, number] {
  const target = p.action.target ? toHex(p.action.target) : null;
  const electors = state.activeDevices().map((r) => toHex(r.deviceId)).filter((d) => d !== target);
  const need = Math.max(1, Math.min(rulesOf(state.policy).approvals, electors.length));
  return [electors.filter((d) => p.approvals.has(d)).length, need];
}

/**
 * Apply a propose/approve/veto/enact entry whose `by` signature verified.
 *
 * @returns the new proposal map and, for an enactment, the proposal whose
 *   action the registry must now carry out.
 * @throws RegistryError, AuthorizationError, SignatureError, DecodeError (§9.8).
 */
export function step(state: RegistryState, e: RegistryEntry): [Map<string, Proposal>, Proposal | null] {
  if (e.ts < state.lastTs) {
    throw new RegistryError(
      `registry ${e.type} entry is dated ${e.ts}, before the previous entry (${state.lastTs}); time may not go back here`,
    );
  }
  const proposals = new Map(state.proposals);
  if (e.type === "propose") {
    proposals.set(toHex(e.hash), propose(state, e));
    return [proposals, null];
  }
  const pid = e.fields.bytes("proposal", { size: 32 });
  const short = toHex(pid).slice(0, 12);
  const p = proposals.get(toHex(pid));
  if (p === undefined) throw new RegistryError(`registry ${e.type} entry names an unknown proposal`);
  if (p.status !== "pending") throw new RegistryError(`proposal ${short} is already ${p.status}`);
  if (e.ts > p.expires) throw new RegistryError(`proposal ${short} expired at ${p.expires} ms`);
  if (p.action.target !== undefined && bytesEqual(e.signer, p.action.target)) {
    throw new AuthorizationError("the target of a revocation may not approve, veto or enact it", Code.NOT_AUTHORIZED);
  }
  if (e.type === "veto") {
    const reason = e.fields.str("reason", 256);
    proposals.set(toHex(pid), { ...p, status: "vetoed", closedSeq: Number(e.seq), closedBy: e.signer, vetoReason: reason });
    return [proposals, null];
  }
  if (!state.isActive(p.proposer)) throw new RegistryError(`proposal ${short} is void: its proposer was revoked`);
  if (e.type === "approve") {
    if (bytesEqual(e.signer, state.accountId)) {
      throw new AuthorizationError(
        "the account key does not approve proposals; it signs device changes directly", Code.NOT_AUTHORIZED);
    }
    if (p.approvals.has(toHex(e.signer))) throw new RegistryError("this device already approved that proposal");
    proposals.set(toHex(pid), { ...p, approvals: new Set([...p.approvals, toHex(e.signer)]) });
    return [proposals, null];
  }
  const [have, need] = tally(state, p);
  if (have < need) throw new RegistryError(`proposal ${short} has ${have} of the ${need} approvals it needs`);
  const opens = p.ts + rulesOf(state.policy).vetoWindowMs;
  if (e.ts < opens) throw new RegistryError(`proposal ${short} is in its veto window until ${opens} ms`);
  const enacted: Proposal = { ...p, status: "enacted", closedSeq: Number(e.seq), closedBy: e.signer };
  proposals.set(toHex(pid), enacted);
  return [proposals, enacted];
}

function propose(state: RegistryState, e: RegistryEntry): Proposal {
  if (bytesEqual(e.signer, state.accountId)) {
    throw new AuthorizationError("the account key changes devices directly; it does not propose", Code.NOT_AUTHORIZED);
  }
  const rules = rulesOf(state.policy);
  if (!rules.governed) {
    throw new RegistryError("this account's policy does not require approval; append the change directly");
  }
  const action = parseAction(e.fields.raw("action"), state.limits);
  const openNow = [...state.proposals.values()].filter((p) => openAt(p, e.ts));
  if (openNow.length >= MAX_PENDING) {
    throw new RegistryError(`the account already has ${MAX_PENDING} open proposals; approve, veto or let them expire first`);
  }
  if (action.type === "add" && action.device !== undefined) {
    const id = action.device.deviceId;
    if (state.devices.has(toHex(id)) ||
      openNow.some((p) => p.action.device !== undefined && bytesEqual(p.action.device.deviceId, id))) {
      throw new RegistryError("that device is already in the registry or proposed");
    }
    try {
      action.device.signingKey.verify(labelled(labels.REGISTRY_COSIG, e.bodyBytes), e.countersignature ?? new Uint8Array(0));
    } catch (err) {
      if (err instanceof SignatureError) throw new SignatureError("new device's countersignature does not verify");
      throw err;
    }
  } else if (action.type === "revoke" && !state.isActive(action.target ?? new Uint8Array(0))) {
    throw new RegistryError("revocation target is not an active device");
  }
  return {
    id: e.hash, seq: Number(e.seq), ts: e.ts, expires: e.ts + rules.ttlMs, proposer: e.signer, action,
    approvals: new Set([toHex(e.signer)]), status: "pending", closedSeq: null, closedBy: null, vetoReason: "",
  };
}

/** Wire form of an action: `{type: kind, ...fields}`. */
export function actionField(kind: ActionType, fields: ReadonlyMap<string, CborValue>): Map<string, CborValue> {
  return new Map<string, CborValue>([["type", kind], ...fields]);
}

