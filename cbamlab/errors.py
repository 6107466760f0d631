"""Errors a user can cause and fix: the CLI turns each into one `error: ...` line and exit status 2."""
import difflib


class CbamlabError(ValueError):
    """Bad input: an unknown name, a malformed file, an impossible setting. The message says what and where."""


class ConfigError(CbamlabError):
    """A config key, type or value that cannot be used."""


class DataError(CbamlabError):
    """A dataset that is missing, malformed or inconsistent."""


class CheckpointError(CbamlabError):
    """A weights or checkpoint file that is corrupt, unsafe or of another architecture."""


def suggest(name: str, known) -> str:
    """' (did you mean x?)' for the close matches of `name` among `known`, else ''."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def unknown(kind: str, name: str, known) -> CbamlabError:
    """The error for a name missing from a `{name: builder}` table: names it, suggests, lists the known ones."""
    known = sorted(known)
    listing = ", ".join(known) if len(known) <= 20 else ", ".join(known[:20]) + f", ... ({len(known)} in all)"
    return CbamlabError(f"unknown {kind} '{name}'{suggest(name, known)}; known: {listing}")
