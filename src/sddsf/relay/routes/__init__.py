"""HTTP routers of the relay, one module per area."""
