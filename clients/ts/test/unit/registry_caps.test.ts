/**
 * Device caps and the device-addition window (docs/protocol.md §9.6) against
 * the Python core: chains of additions and revocations, by devices and by the
 * account key, verified under lowered limits by both; every step (on top of
 * the steps accepted before it) gets the same verdict (the error code, or the
 * same head).
 */

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { before, test } from "node:test";

import { toHex } from "../../src/bytes.js";
import { randomBytes, ready } from "../../src/crypto.js";
import { SddsfError } from "../../src/errors.js";
import { AccountKeys, DeviceKeys } from "../../src/identity.js";
import { DEFAULT_PROTOCOL_LIMITS, type ProtocolLimits } from "../../src/limits.js";
import { addDevice, genesis, revokeDevice, verifyRegistry, type RegistryState } from "../../src/registry.js";
import { PACKAGE_ROOT, REPO_ROOT } from "../../testkit/kit.js";
import { PYTHON, pythonAvailable } from "../../testkit/relaykit.js";

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

before(ready);

type Step = ["add" | "revoke", "device" | "account", number, number]; // kind, signer, device index, ts offset

const T0 = 1_767_225_600_000;

function entryFor(state: RegistryState, account: AccountKeys, pool: DeviceKeys[], [kind, by, i, dt]: Step): Uint8Array {
  const signer = by === "account" ? account : pool[0]!;
  return kind === "add" ? addDevice(state, signer, pool[i]!, `d${i}`, T0 + dt)
    : revokeDevice(state, signer, pool[i]!.deviceId, "lost", T0 + dt);
}

/**
 * The candidate chains: each step on top of the steps accepted so far under
 * `limits` (entries are built on the state the default limits give, which
 * accept them all; the verdicts under the lowered limits are the test).
 */
function candidates(account: AccountKeys, pool: DeviceKeys[], steps: readonly Step[], limits: ProtocolLimits): Uint8Array[][] {
  let accepted = [genesis(account, pool[0]!, "d0", T0)];
  const out: Uint8Array[][] = [];
  for (const step of steps) {
    const chain = [...accepted, entryFor(verifyRegistry(accepted, account.publicKeys), account, pool, step)];
    out.push(chain);
    if (verdict(chain, account, limits).code === null) accepted = chain;
  }
  return out;
}

function verdict(chain: Uint8Array[], account: AccountKeys, limits: ProtocolLimits): Json {
  try {
    return { code: null, head: toHex(verifyRegistry(chain, account.publicKeys, limits).head) };
  } catch (e) {
    if (e instanceof SddsfError) return { code: e.code, head: null };
    throw e;
  }
}

test("device caps and the addition window: the same verdict as the Python core on every step", (t) => {
  if (!pythonAvailable(t)) return;
  const account = AccountKeys.fromSecret(randomBytes(32));
  const pool = Array.from({ length: 8 }, () => DeviceKeys.fromSeeds(randomBytes(32), randomBytes(32)));
  const scenarios: [Partial<ProtocolLimits>, Record<string, number>, Step[]][] = [
    // The window: the third device-signed addition within 1 s is refused; later, or by the account key, it is not.
    [{ maxAddsPerWindow: 2, addWindowMs: 1000 }, { max_adds_per_window: 2, add_window_ms: 1000 },
      [["add", "device", 1, 10], ["add", "device", 2, 20], ["add", "device", 3, 30], ["add", "account", 3, 40],
        ["add", "device", 4, 50], ["add", "device", 4, 2000]]],
    // Active devices: devices leave the last slot to the account key.
    [{ maxDevices: 3 }, { max_devices: 3 },
      [["add", "device", 1, 10], ["add", "device", 2, 20], ["add", "account", 2, 30], ["add", "account", 3, 40],
        ["revoke", "account", 1, 50], ["add", "account", 3, 60], ["add", "device", 4, 70]]],
    // Device records introduced by devices (revoked ones count).
    [{ maxDeviceRecords: 3 }, { max_device_records: 3 },
      [["add", "device", 1, 10], ["revoke", "device", 1, 20], ["add", "device", 2, 30], ["revoke", "device", 2, 40],
        ["add", "device", 3, 50], ["add", "account", 3, 60], ["add", "device", 4, 70]]],
  ];
  let refusals = 0;
  for (const [tsLimits, pyLimits, steps] of scenarios) {
    const limits = { ...DEFAULT_PROTOCOL_LIMITS, ...tsLimits };
    const chains = candidates(account, pool, steps, limits);
    const r = spawnSync(PYTHON, [join(PACKAGE_ROOT, "testkit", "py_registry.py")], { encoding: "utf8", timeout: 60_000,
      input: JSON.stringify({ limits: pyLimits, pinned: [toHex(account.signing.publicKey.raw), toHex(account.recovery.publicKey)],
        chains: chains.map((c) => c.map(toHex)) }), env: { ...process.env, PYTHONPATH: join(REPO_ROOT, "src") } });
    assert.equal(r.status, 0, r.stderr);
    const py: Json[] = JSON.parse(r.stdout);
    assert.deepEqual(chains.map((c) => verdict(c, account, limits)), py);
    refusals += py.filter((v) => v.code === "registry_invalid").length;
  }
  assert.ok(refusals >= 3, "every cap refuses something");
});
