"""Test kit shipped with SDDSF: deterministic vector generation (and, as the
relay and client land, fakes and conformance suites). Not imported by the
library itself."""
