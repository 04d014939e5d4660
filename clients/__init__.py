"""clients: the device. Identity, prekeys, X3DH/PQXDH, the Double Ratchet, sealed sender."""
