"""SQL rule packs and the cause catalogue (data, loaded by forensics.rules)."""
