"""Test support shipped with lamina: the malformed-input generator and reliability runner (:mod:`.fuzz`), kill -9
trials of training (:mod:`.kill`) and a command's own peak memory (:mod:`.peak`)."""
