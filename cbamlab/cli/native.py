"""`cbamlab native`: build (first use) or load the native CBAM operator and say how that went."""
from __future__ import annotations

import json

from ..errors import CbamlabError
from ..models import native

DESCRIPTION = """Build the native CBAM operator (one fused C++ operator per direction) if this machine has no
build of it yet, load it, and say where the build is, how long it took and what `model.attn_impl=auto` runs.
The first CBAM forward does the same on its own; this command does it up front (make demo and make test call
it), e.g. before many processes start at once. Builds are kept in $CBAMLAB_CACHE_DIR/native (default
~/.cache/cbamlab/native), one per torch version, CPU capability and source. Without a C++ compiler, or when the
build fails, CBAM runs the reference implementation (the same math) and this says why."""


def register(subparsers) -> None:
    p = subparsers.add_parser("native", help="build or load the native CBAM operator and show its status",
                              description=DESCRIPTION, epilog="docs: docs/performance.md")
    p.add_argument("--require", action="store_true", help="exit with an error when the operator cannot be used")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings")
    p.set_defaults(func=run)


def run(args) -> int:
    result = native.load()
    status = native.status()
    if args.json:
        print(json.dumps(status, indent=2))
    elif result.ok:
        how = f"built in {result.seconds:.1f} s" if result.built else f"loaded from the cache in {result.seconds:.2f} s"
        print(f"native CBAM: {how} ({status['capability']}, torch {status['torch']})")
        print(f"  library: {result.path}")
        print("  model.attn_impl=auto runs it for CBAM on the CPU in float32, float64 and bfloat16")
    else:
        print(f"native CBAM: not available ({result.reason}); CBAM runs the reference implementation")
    if args.require and not result.ok:
        raise CbamlabError(f"the native CBAM operator cannot be used: {result.reason}")
    return 0
