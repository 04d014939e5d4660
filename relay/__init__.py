"""relay: the server side. It routes opaque envelopes and records only what it can see."""
