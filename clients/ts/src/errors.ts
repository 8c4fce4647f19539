/**
 * The one error tree of SDDSF, with the stable wire codes of docs/protocol.md §14.
 *
 * Mirrors `sddsf.errors`: every rejection is an {@link SddsfError} carrying a
 * {@link Code}; each code belongs to exactly one class, so an error rebuilt
 * from the relay's `{code, message}` body ({@link errorFromWire}) is an
 * instance of the same class a local check would throw.
 *
 * ```
 * SddsfError
 * ├── LocalProtocolError     UsageError (usage), ConfigError (config)
 * ├── ServiceError           UnavailableError, ConflictError, NotFoundError, InternalError
 * └── RemoteProtocolError
 *     ├── DecodeError        malformed, too_large, unsupported_version, unsupported_suite
 *     ├── RateLimitedError   rate_limited
 *     └── VerificationError  AuthenticationError, SignatureError, KeyValidationError,
 *                            ContextError, ChainError, AuthorizationError, EpochError,
 *                            ClockSkewError, RegistryError, MembershipError, ProofError,
 *                            DecryptError
 * ```
 */

/** Stable error codes; the value is what travels on the wire. */
export const Code = {
  USAGE: "usage",
  CONFIG: "config",
  MALFORMED: "malformed",
  TOO_LARGE: "too_large",
  UNSUPPORTED_VERSION: "unsupported_version",
  UNSUPPORTED_SUITE: "unsupported_suite",
  SIG_INVALID: "sig_invalid",
  BAD_KEY: "bad_key",
  WRONG_CONTEXT: "wrong_context",
  CHAIN_FORK: "chain_fork",
  CHAIN_GAP: "chain_gap",
  DEPS_REGRESSION: "deps_regression",
  UNKNOWN_DEVICE: "unknown_device",
  REVOKED: "revoked",
  NOT_AUTHORIZED: "not_authorized",
  POLICY_READ_ONLY: "policy_read_only",
  POLICY_DENIED: "policy_denied",
  STALE_EPOCH: "stale_epoch",
  UNKNOWN_EPOCH: "unknown_epoch",
  EPOCH_COMPROMISED: "epoch_compromised",
  ROTATION_BLOCKED: "rotation_blocked",
  CLOCK_SKEW: "clock_skew",
  PRESENCE_EXPIRED: "presence_expired",
  REGISTRY_INVALID: "registry_invalid",
  REGISTRY_FORK: "registry_fork",
  MEMBERSHIP_INVALID: "membership_invalid",
  PROOF_INVALID: "proof_invalid",
  TREE_HEAD_INVALID: "tree_head_invalid",
  LOG_ROLLBACK: "log_rollback",
  SPLIT_VIEW: "split_view",
  KEY_PACKAGE_FORK: "key_package_fork",
  REGISTRY_WITHHELD: "registry_withheld",
  SNAPSHOT_MISMATCH: "snapshot_mismatch",
  DECRYPT_FAILED: "decrypt_failed",
  UNAUTHENTICATED: "unauthenticated",
  REPLAY: "replay",
  RATE_LIMITED: "rate_limited",
  NOT_FOUND: "not_found",
  CONFLICT: "conflict",
  UNAVAILABLE: "unavailable",
  REQUEST_TIMEOUT: "request_timeout",
  INTERNAL: "internal",
} as const;

/** One of the stable error codes. */
export type Code = (typeof Code)[keyof typeof Code];

const ALL_CODES: ReadonlySet<string> = new Set(Object.values(Code));

/** Whether `value` is a code this build knows. */
export function isCode(value: string): value is Code {
  return ALL_CODES.has(value);
}

type ErrorClass = abstract new (message: string, code?: Code) => SddsfError;

/** Root of every SDDSF error: a stable `code` and a `message` for a person. */
export class SddsfError extends Error {
  /** The code used when none is given. */
  static readonly defaultCode: Code = Code.USAGE;
  /** The stable code of this rejection. */
  readonly code: Code;

  /**
   * @param message a sentence for a person (never key material or plaintext).
   * @param code the stable code; defaults to the class's own.
   * @throws TypeError when `code` belongs to another class (a programming error).
   */
  constructor(message: string, code?: Code) {
    const own = code ?? (new.target as unknown as { defaultCode: Code }).defaultCode;
    super(`[${own}] ${message}`);
    this.name = new.target.name;
    this.code = own;
    this.message = message;
    const expected = CLASS_FOR_CODE.get(own);
    if (expected !== undefined && !(this instanceof expected)) {
      throw new TypeError(`code "${own}" belongs to ${expected.name}, not ${new.target.name}`);
    }
  }

  /** The HTTP status the relay answers with for this error. */
  get httpStatus(): number {
    return HTTP_STATUS[this.code];
  }

  /** The `{code, message}` body the relay sends. */
  toWire(): { code: string; message: string } {
    return { code: this.code, message: this.message };
  }
}

/** The caller misused the API. */
export class LocalProtocolError extends SddsfError {}
/** An argument or call order the API does not allow. */
export class UsageError extends LocalProtocolError {
  static override readonly defaultCode: Code = Code.USAGE;
}
/** A configuration value that is missing or out of range. */
export class ConfigError extends LocalProtocolError {
  static override readonly defaultCode: Code = Code.CONFIG;
}
/** The service cannot do this now; nobody misbehaved. */
export class ServiceError extends SddsfError {}
/** A dependency is unavailable; nothing was stored. Retry later. */
export class UnavailableError extends ServiceError {
  static override readonly defaultCode: Code = Code.UNAVAILABLE;
}
/** A concurrent writer changed the state first; re-read and retry. */
export class ConflictError extends ServiceError {
  static override readonly defaultCode: Code = Code.CONFLICT;
}
/** The account, space or object does not exist. */
export class NotFoundError extends ServiceError {
  static override readonly defaultCode: Code = Code.NOT_FOUND;
}
/** A bug inside the relay; nothing was acknowledged. */
export class InternalError extends ServiceError {
  static override readonly defaultCode: Code = Code.INTERNAL;
}
/** The peer (another device or the relay) sent something unacceptable. */
export class RemoteProtocolError extends SddsfError {}
/** Bytes that do not decode as the expected structure, or exceed a limit. */
export class DecodeError extends RemoteProtocolError {
  static override readonly defaultCode: Code = Code.MALFORMED;
}
/** Too many requests; `retryAfterS` says when to try again. */
export class RateLimitedError extends RemoteProtocolError {
  static override readonly defaultCode: Code = Code.RATE_LIMITED;
  /** Seconds to wait before retrying. */
  retryAfterS = 1;
}
/** A well-formed structure that fails a verification rule. */
export class VerificationError extends RemoteProtocolError {}
/** No valid session, or a replayed or stale signed request. */
export class AuthenticationError extends VerificationError {
  static override readonly defaultCode: Code = Code.UNAUTHENTICATED;
}
/** A signature does not verify (one opaque error for every cause). */
export class SignatureError extends VerificationError {
  static override readonly defaultCode: Code = Code.SIG_INVALID;
}
/** A public key that is low-order, non-canonical or otherwise unusable. */
export class KeyValidationError extends VerificationError {
  static override readonly defaultCode: Code = Code.BAD_KEY;
}
/** A structure bound to one context presented in another. */
export class ContextError extends VerificationError {
  static override readonly defaultCode: Code = Code.WRONG_CONTEXT;
}
/** A per-author chain rule failed: fork, gap or deps regression. */
export class ChainError extends VerificationError {
  static override readonly defaultCode: Code = Code.CHAIN_FORK;
}
/** The signer is unknown, revoked, or not allowed to do this. */
export class AuthorizationError extends VerificationError {
  static override readonly defaultCode: Code = Code.NOT_AUTHORIZED;
}
/** The key epoch is too old or not known yet. */
export class EpochError extends VerificationError {
  static override readonly defaultCode: Code = Code.STALE_EPOCH;
}
/** A timestamp outside the allowed window. */
export class ClockSkewError extends VerificationError {
  static override readonly defaultCode: Code = Code.CLOCK_SKEW;
}
/** The device registry does not verify from genesis. */
export class RegistryError extends VerificationError {
  static override readonly defaultCode: Code = Code.REGISTRY_INVALID;
}
/** A space membership entry breaks a membership rule (docs/protocol.md §21). */
export class MembershipError extends VerificationError {
  static override readonly defaultCode: Code = Code.MEMBERSHIP_INVALID;
}
/** A Merkle proof or signed tree head fails, or the log went back in time. */
export class ProofError extends VerificationError {
  static override readonly defaultCode: Code = Code.PROOF_INVALID;
}
/** Authenticated decryption failed. */
export class DecryptError extends VerificationError {
  static override readonly defaultCode: Code = Code.DECRYPT_FAILED;
}

/** Each code's one class and HTTP status (docs/protocol.md §14). */
const CODES: ReadonlyArray<readonly [Code, ErrorClass, number]> = [
  [Code.USAGE, UsageError, 400],
  [Code.CONFIG, ConfigError, 400],
  [Code.MALFORMED, DecodeError, 400],
  [Code.TOO_LARGE, DecodeError, 413],
  [Code.UNSUPPORTED_VERSION, DecodeError, 400],
  [Code.UNSUPPORTED_SUITE, DecodeError, 400],
  [Code.SIG_INVALID, SignatureError, 401],
  [Code.BAD_KEY, KeyValidationError, 400],
  [Code.WRONG_CONTEXT, ContextError, 400],
  [Code.CHAIN_FORK, ChainError, 409],
  [Code.CHAIN_GAP, ChainError, 409],
  [Code.DEPS_REGRESSION, ChainError, 409],
  [Code.UNKNOWN_DEVICE, AuthorizationError, 403],
  [Code.REVOKED, AuthorizationError, 403],
  [Code.NOT_AUTHORIZED, AuthorizationError, 403],
  [Code.POLICY_READ_ONLY, AuthorizationError, 403],
  [Code.POLICY_DENIED, AuthorizationError, 403],
  [Code.STALE_EPOCH, EpochError, 409],
  [Code.UNKNOWN_EPOCH, EpochError, 409],
  [Code.EPOCH_COMPROMISED, EpochError, 409],
  [Code.ROTATION_BLOCKED, EpochError, 409],
  [Code.CLOCK_SKEW, ClockSkewError, 400],
  [Code.PRESENCE_EXPIRED, ClockSkewError, 400],
  [Code.REGISTRY_INVALID, RegistryError, 400],
  [Code.REGISTRY_FORK, RegistryError, 409],
  [Code.MEMBERSHIP_INVALID, MembershipError, 409],
  [Code.PROOF_INVALID, ProofError, 400],
  [Code.TREE_HEAD_INVALID, ProofError, 400],
  [Code.LOG_ROLLBACK, ProofError, 409],
  [Code.SPLIT_VIEW, ProofError, 409],
  [Code.KEY_PACKAGE_FORK, ProofError, 409],
  [Code.REGISTRY_WITHHELD, ProofError, 409],
  [Code.SNAPSHOT_MISMATCH, ProofError, 409],
  [Code.DECRYPT_FAILED, DecryptError, 400],
  [Code.UNAUTHENTICATED, AuthenticationError, 401],
  [Code.REPLAY, AuthenticationError, 401],
  [Code.RATE_LIMITED, RateLimitedError, 429],
  [Code.NOT_FOUND, NotFoundError, 404],
  [Code.CONFLICT, ConflictError, 409],
  [Code.UNAVAILABLE, UnavailableError, 503],
  [Code.REQUEST_TIMEOUT, UnavailableError, 408],
  [Code.INTERNAL, InternalError, 500],
];

const CLASS_FOR_CODE: ReadonlyMap<Code, ErrorClass> = new Map(CODES.map(([c, k]) => [c, k]));

/** The HTTP status of each code. */
export const HTTP_STATUS: Readonly<Record<Code, number>> = Object.fromEntries(
  CODES.map(([c, , s]) => [c, s]),
) as Record<Code, number>;

/** The class a code belongs to. */
export function classForCode(code: Code): ErrorClass {
  const cls = CLASS_FOR_CODE.get(code);
  if (cls === undefined) throw new TypeError(`no class for code ${code}`);
  return cls;
}

/**
 * Rebuild the typed error a peer reported as `{code, message}`.
 *
 * An unknown code (a newer peer) becomes a {@link DecodeError} with code
 * `malformed`, keeping the peer's code in the message.
 */
export function errorFromWire(code: string, message: string): SddsfError {
  if (!isCode(code)) {
    return new DecodeError(`peer reported unknown error code '${code}': ${message}`, Code.MALFORMED);
  }
  const cls = classForCode(code) as unknown as new (m: string, c: Code) => SddsfError;
  return new cls(message, code);
}
