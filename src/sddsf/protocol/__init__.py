"""The SDDSF protocol core: pure, sans-IO.

Nothing in this package opens a socket or a file, starts a thread, reads a
clock or draws random bytes: time and randomness are parameters, and the
relay, the client and the CLI are adapters around it (a test checks the
imports). Modules:

* :mod:`~sddsf.protocol.encoding` - canonical CBOR subset, bounded decoder
* :mod:`~sddsf.protocol.labels` - domain-separation labels
* :mod:`~sddsf.protocol.identity` - device and account identities
* :mod:`~sddsf.protocol.envelope` - signed, encrypted op envelopes
* :mod:`~sddsf.protocol.vv`, :mod:`~sddsf.protocol.clock` - version vectors, HLC
* :mod:`~sddsf.protocol.registry` - the account's device sigchain
* :mod:`~sddsf.protocol.keypackage` - key epochs and key packages
* :mod:`~sddsf.protocol.merkle`, :mod:`~sddsf.protocol.treehead` - RFC 9162 log
* :mod:`~sddsf.protocol.rules` - THE verification rules, shared by relay and clients
* :mod:`~sddsf.protocol.presence` - signed, encrypted presence records (where a
  device of a space can be reached peer to peer)
* :mod:`~sddsf.protocol.posture`, :mod:`~sddsf.protocol.encpolicy`,
  :mod:`~sddsf.protocol.audit` - what devices and the relay's security
  controller sign for each other: device reports, the encryption policy, the
  account's audit log
"""
