"""Test support shipped with lamina: the malformed-input generator and reliability runner (:mod:`.fuzz`)."""
