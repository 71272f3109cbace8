#!/usr/bin/env python3
"""Compare two fixture trees written by gen_fixtures.py, byte for byte.

MANIFEST.json is compared as JSON with its "command" entry left out (it names the
output folder).  Exit status 0 when the trees are identical.

    python3 scripts/fixtures_compare.py DIR_A DIR_B
"""

import json
import os
import sys


def files(root):
    out = set()
    for d, _, fs in os.walk(root):
        for f in fs:
            out.add(os.path.relpath(os.path.join(d, f), root))
    return out


def main():
    a, b = sys.argv[1], sys.argv[2]
    fa, fb = files(a), files(b)
    bad = [f"only in {a}: {f}" for f in sorted(fa - fb)] + [f"only in {b}: {f}" for f in sorted(fb - fa)]
    for f in sorted(fa & fb):
        pa, pb = os.path.join(a, f), os.path.join(b, f)
        if f == "MANIFEST.json":
            ja, jb = json.load(open(pa)), json.load(open(pb))
            ja.pop("command", None)
            jb.pop("command", None)
            if ja != jb:
                bad.append(f"differs: {f} ({[k for k in ja if ja.get(k) != jb.get(k)]})")
        elif open(pa, "rb").read() != open(pb, "rb").read():
            bad.append(f"differs: {f}")
    print("\n".join(bad) if bad else f"identical: {len(fa)} files")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
