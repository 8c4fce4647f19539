"""The security orchestration controller, relay side (``docs/controller.md``).

Trust scores (:mod:`.trust`), the operator's policy (:mod:`.policy`), anomaly
detectors (:mod:`.detectors`, the optional learned one in :mod:`.ml`) and the
adapter that runs them inside a relay process over its storage
(:mod:`.service`). The signed formats it shares with clients -- device reports,
the encryption policy, audit entries -- are protocol: :mod:`sddsf.protocol.posture`,
:mod:`sddsf.protocol.encpolicy`, :mod:`sddsf.protocol.audit`.
"""
