/**
 * The device's local store: every value encrypted at rest (the browser's
 * IndexedDB, or memory in tests), under a 32-byte storage key that is itself
 * protected one of two ways (as `sddsf.client.home` protects a Python
 * device's store key):
 *
 * * `webcrypto`: wrapped with AES-256-GCM by a NON-EXTRACTABLE WebCrypto key
 *   that lives in the same IndexedDB (a structured-cloned `CryptoKey`): script
 *   on the page can use it but never read it out, and a copy of the database
 *   files is useless without the browser profile's key store;
 * * `passphrase`: wrapped with XChaCha20-Poly1305 (ad = `sddsf/v1/storage-key`)
 *   under Argon2id(passphrase) with the Python client's parameters (t = 3,
 *   m = 64 MiB, p = 4; hash-wasm, because libsodium.js only does p = 1); the
 *   record has the Python key file's fields, and weaker parameters are refused.
 *
 * A value is `nonce (24) ‖ XChaCha20-Poly1305(storage key, nonce, value,
 * ad = labelled("sddsf/v1/web/store-value", key))`: binding the key name means
 * a value moved to another key does not open. Writes go in batches applied
 * atomically (one IndexedDB transaction).
 */

import { argon2id } from "hash-wasm";

import { concat, fromHex, toHex, utf8 } from "./bytes.js";
import { AEAD_NONCE_SIZE, aeadDecrypt, aeadEncrypt, randomBytes } from "./crypto.js";
import { ConfigError, DecryptError, NotFoundError, UsageError } from "./errors.js";
import { labelled } from "./labels.js";

/** Argon2id parameters of the Python client (`sddsf.client.home`). */
export const KDF_TIME = 3;
export const KDF_MEMORY_KIB = 64 * 1024;
export const KDF_PARALLELISM = 4;
/** Shortest passphrase, as the Python client's. */
export const MIN_PASSPHRASE = 8;
const KEY_AD = utf8("sddsf/v1/storage-key");
/** A copy in a plain ArrayBuffer, as WebCrypto wants. */
const buf = (b: Uint8Array): ArrayBuffer => b.slice().buffer as ArrayBuffer;
const VALUE_LABEL = "sddsf/v1/web/store-value";
const KEY_RECORD = "storage-key";
const WRAPPING_KEY = "wrapping-key";

/** Raw storage: values by key, metadata by name, atomic batches. */
export interface Backend {
  get(key: string): Promise<Uint8Array | undefined>;
  /** Keys starting with `prefix`, sorted. */
  keys(prefix: string): Promise<string[]>;
  /** Apply every put (a value) and delete (null) atomically. */
  apply(entries: ReadonlyMap<string, Uint8Array | null>): Promise<void>;
  getMeta(name: string): Promise<unknown>;
  putMeta(name: string, value: unknown): Promise<void>;
  /** Remove everything (the device is forgotten). */
  clear(): Promise<void>;
  close(): void;
}

/** A backend in memory (tests, and Node). */
export class MemoryBackend implements Backend {
  private readonly values = new Map<string, Uint8Array>();
  private readonly meta = new Map<string, unknown>();

  async get(key: string): Promise<Uint8Array | undefined> {
    return this.values.get(key);
  }

  async keys(prefix: string): Promise<string[]> {
    return [...this.values.keys()].filter((k) => k.startsWith(prefix)).sort();
  }

  async apply(entries: ReadonlyMap<string, Uint8Array | null>): Promise<void> {
    for (const [k, v] of entries) {
      if (v === null) this.values.delete(k);
      else this.values.set(k, new Uint8Array(v));
    }
  }

  async getMeta(name: string): Promise<unknown> {
    return this.meta.get(name);
  }

  async putMeta(name: string, value: unknown): Promise<void> {
    this.meta.set(name, value);
  }

  async clear(): Promise<void> {
    this.values.clear();
    this.meta.clear();
  }

  close(): void {}

  /** The raw stored bytes (tests check that nothing is stored in plaintext). */
  rawValues(): Map<string, Uint8Array> {
    return new Map(this.values);
  }
}

function request<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
  });
}

/** A backend in the browser's IndexedDB: object stores `values` and `meta`. */
export class IndexedDbBackend implements Backend {
  private constructor(private readonly db: IDBDatabase) {}

  /** Open (or create) the database `name`. */
  static async open(name: string, factory: IDBFactory = globalThis.indexedDB): Promise<IndexedDbBackend> {
    if (factory === undefined) throw new ConfigError("IndexedDB is not available here");
    const r = factory.open(name, 1);
    r.onupgradeneeded = () => {
      r.result.createObjectStore("values");
      r.result.createObjectStore("meta");
    };
    return new IndexedDbBackend(await request(r));
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    const v = await request(this.db.transaction("values").objectStore("values").get(key));
    return v === undefined ? undefined : new Uint8Array(v as ArrayBuffer);
  }

  async keys(prefix: string): Promise<string[]> {
    const range = IDBKeyRange.bound(prefix, `${prefix}\uffff`);
    const keys = await request(this.db.transaction("values").objectStore("values").getAllKeys(range));
    return (keys as string[]).sort();
  }

  async apply(entries: ReadonlyMap<string, Uint8Array | null>): Promise<void> {
    const tx = this.db.transaction("values", "readwrite");
    const store = tx.objectStore("values");
    for (const [k, v] of entries) {
      if (v === null) store.delete(k);
      else store.put(v.slice().buffer, k);
    }
    await done(tx);
  }

  async getMeta(name: string): Promise<unknown> {
    return request(this.db.transaction("meta").objectStore("meta").get(name));
  }

  async putMeta(name: string, value: unknown): Promise<void> {
    const tx = this.db.transaction("meta", "readwrite");
    tx.objectStore("meta").put(value, name);
    await done(tx);
  }

  async clear(): Promise<void> {
    const tx = this.db.transaction(["values", "meta"], "readwrite");
    tx.objectStore("values").clear();
    tx.objectStore("meta").clear();
    await done(tx);
  }

  close(): void {
    this.db.close();
  }
}

/** How the storage key is kept: the Python key file's fields, or a WebCrypto wrap. */
export type KeyRecord =
  | { kind: "passphrase"; kdf: "argon2id"; t: number; m: number; p: number; salt: string; wrapped: string }
  | { kind: "webcrypto"; iv: string; wrapped: string };

/** Argon2id (RFC 9106) of a passphrase, as `sddsf.crypto.argon2id`. */
export async function deriveKek(passphrase: string, salt: Uint8Array, t = KDF_TIME, m = KDF_MEMORY_KIB,
  p = KDF_PARALLELISM): Promise<Uint8Array> {
  return argon2id({ password: utf8(passphrase), salt, iterations: t, memorySize: m, parallelism: p, hashLength: 32,
    outputType: "binary" });
}

/** Wrap `key` under a passphrase (the Python key file's `passphrase` record). */
export async function wrapWithPassphrase(key: Uint8Array, passphrase: string): Promise<KeyRecord> {
  if ([...passphrase].length < MIN_PASSPHRASE) throw new UsageError(`the passphrase must have at least ${MIN_PASSPHRASE} characters`);
  const salt = randomBytes(16);
  const nonce = randomBytes(AEAD_NONCE_SIZE);
  const kek = await deriveKek(passphrase, salt);
  return { kind: "passphrase", kdf: "argon2id", t: KDF_TIME, m: KDF_MEMORY_KIB, p: KDF_PARALLELISM, salt: toHex(salt),
    wrapped: toHex(concat(nonce, aeadEncrypt(kek, nonce, key, KEY_AD))) };
}

/**
 * Open a passphrase record (also one written by the Python client).
 *
 * @throws ConfigError weaker KDF parameters than allowed or a broken record;
 *   DecryptError a wrong passphrase.
 */
export async function unwrapWithPassphrase(record: KeyRecord, passphrase: string): Promise<Uint8Array> {
  if (record.kind !== "passphrase" || record.kdf !== "argon2id") throw new ConfigError("not a passphrase key record");
  if (!(record.m >= KDF_MEMORY_KIB && record.t >= KDF_TIME && record.p >= 1 && record.m <= 4 * 1024 * 1024 && record.t <= 64 &&
    record.p <= 64)) {
    throw new ConfigError("the storage key record has weaker (or absurd) KDF parameters than allowed");
  }
  const wrapped = fromHex(record.wrapped);
  const kek = await deriveKek(passphrase, fromHex(record.salt), record.t, record.m, record.p);
  try {
    return aeadDecrypt(kek, wrapped.slice(0, AEAD_NONCE_SIZE), wrapped.slice(AEAD_NONCE_SIZE), KEY_AD);
  } catch (e) {
    if (e instanceof DecryptError) throw new DecryptError("wrong passphrase for this device");
    throw e;
  }
}

/** How a new store protects its key. */
export type Protection = { kind: "webcrypto" } | { kind: "passphrase"; passphrase: string };

/** Batched writes to a {@link Store}, applied atomically by {@link Store.commit}. */
export class Batch {
  readonly entries = new Map<string, Uint8Array | null>();

  put(key: string, value: Uint8Array): this {
    this.entries.set(key, value);
    return this;
  }

  delete(key: string): this {
    this.entries.set(key, null);
    return this;
  }
}

/** An encrypted store over a backend. */
export class Store {
  private constructor(
    readonly backend: Backend,
    private readonly key: Uint8Array,
  ) {}

  /** Whether the backend holds a store (a storage key record). */
  static async exists(backend: Backend): Promise<boolean> {
    return (await backend.getMeta(KEY_RECORD)) !== undefined;
  }

  /**
   * Create a store with a fresh storage key protected as `protection` says.
   *
   * @throws UsageError the backend already holds a store, or a short passphrase.
   */
  static async create(backend: Backend, protection: Protection): Promise<Store> {
    if (await Store.exists(backend)) throw new UsageError("this browser already holds an SDDSF device; forget it first");
    const key = randomBytes(32);
    let record: KeyRecord;
    if (protection.kind === "passphrase") {
      record = await wrapWithPassphrase(key, protection.passphrase);
    } else {
      const wrapping = await globalThis.crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false,
        ["encrypt", "decrypt"]);
      const iv = randomBytes(12);
      const wrapped = new Uint8Array(await globalThis.crypto.subtle.encrypt({ name: "AES-GCM", iv: buf(iv), additionalData: buf(KEY_AD) },
        wrapping, buf(key)));
      await backend.putMeta(WRAPPING_KEY, wrapping);
      record = { kind: "webcrypto", iv: toHex(iv), wrapped: toHex(wrapped) };
    }
    await backend.putMeta(KEY_RECORD, record);
    return new Store(backend, key);
  }

  /** How the existing store protects its key (`passphrase` needs one to open). */
  static async protection(backend: Backend): Promise<"passphrase" | "webcrypto" | null> {
    const record = (await backend.getMeta(KEY_RECORD)) as KeyRecord | undefined;
    return record?.kind ?? null;
  }

  /**
   * Open an existing store.
   *
   * @throws NotFoundError no store; UsageError a passphrase store opened without
   *   one; DecryptError a wrong passphrase, or a key that does not open.
   */
  static async open(backend: Backend, passphrase?: string): Promise<Store> {
    const record = (await backend.getMeta(KEY_RECORD)) as KeyRecord | undefined;
    if (record === undefined) throw new NotFoundError("this browser holds no SDDSF device");
    if (record.kind === "passphrase") {
      if (passphrase === undefined) throw new UsageError("this device's store is protected by a passphrase: enter it");
      return new Store(backend, await unwrapWithPassphrase(record, passphrase));
    }
    const wrapping = (await backend.getMeta(WRAPPING_KEY)) as CryptoKey | undefined;
    if (wrapping === undefined) throw new DecryptError("the store's wrapping key is gone; this device cannot be opened");
    try {
      const key = await globalThis.crypto.subtle.decrypt({ name: "AES-GCM", iv: buf(fromHex(record.iv)),
        additionalData: buf(KEY_AD) }, wrapping, buf(fromHex(record.wrapped)));
      return new Store(backend, new Uint8Array(key));
    } catch {
      throw new DecryptError("the store's key does not open with its wrapping key");
    }
  }

  private seal(key: string, value: Uint8Array): Uint8Array {
    const nonce = randomBytes(AEAD_NONCE_SIZE);
    return concat(nonce, aeadEncrypt(this.key, nonce, value, labelled(VALUE_LABEL, key)));
  }

  /**
   * The value of `key`, or undefined.
   *
   * @throws DecryptError a value that was tampered with or moved from another key.
   */
  async get(key: string): Promise<Uint8Array | undefined> {
    const raw = await this.backend.get(key);
    if (raw === undefined) return undefined;
    return aeadDecrypt(this.key, raw.slice(0, AEAD_NONCE_SIZE), raw.slice(AEAD_NONCE_SIZE), labelled(VALUE_LABEL, key));
  }

  /** Keys starting with `prefix`, sorted. */
  async keys(prefix: string): Promise<string[]> {
    return this.backend.keys(prefix);
  }

  /** Apply a batch atomically (every value encrypted). */
  async commit(batch: Batch): Promise<void> {
    const sealed = new Map<string, Uint8Array | null>();
    for (const [k, v] of batch.entries) sealed.set(k, v === null ? null : this.seal(k, v));
    await this.backend.apply(sealed);
  }

  /** Put one value. */
  async put(key: string, value: Uint8Array): Promise<void> {
    await this.commit(new Batch().put(key, value));
  }
}
