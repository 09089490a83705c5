# Renaming official checkpoint keys (one source: book/src/include/official_keys.py).
def _rename_official(state_dict: dict, prefixes) -> dict:
    """Rename the keys of an official state dict to this module's. `prefixes` holds
    (official, ours) pairs of submodule paths ending in "."; the first pair that matches
    a key, at its start or after a ".", renames it, so the keys of a whole network's
    checkpoint convert too (the part before the module is kept). Keys no pair matches
    are kept; the order of the keys is kept."""
    converted = {}
    for key, value in state_dict.items():
        for official, ours in prefixes:
            if key.startswith(official):
                key = ours + key[len(official):]
                break
            at = key.find("." + official)
            if at >= 0:
                key = key[: at + 1] + ours + key[at + 1 + len(official):]
                break
        converted[key] = value
    return converted
