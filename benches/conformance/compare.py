#!/usr/bin/env python3
"""Compare two Autobahn-format report folders (index.json) case by case.

    compare.py DIRECT_REPORTS PROXY_REPORTS

Prints a markdown summary: verdicts per run (OK, NON-STRICT, INFORMATIONAL,
UNIMPLEMENTED, FAILED, ...), then every case whose verdict (behavior or
behaviorClose) or remote close code differs. Exits 1 if any verdict differs.
"""

import collections
import json
import os
import sys


def cases(folder):
    with open(os.path.join(folder, "index.json")) as f:
        index = json.load(f)
    (agent,) = index.values()
    return agent


def key(case_id):
    return tuple(int(p) for p in case_id.split("."))


def main():
    direct, proxy = (cases(d) for d in sys.argv[1:3])
    ids = sorted(set(direct) | set(proxy), key=key)
    print("| run | cases | " + " | ".join(["behavior", "close behavior"]) + " |")
    print("|---|--:|---|---|")
    for name, run in (("direct", direct), ("through Switchyard", proxy)):
        behavior = collections.Counter(c["behavior"] for c in run.values())
        close = collections.Counter(c["behaviorClose"] for c in run.values())
        show = lambda c: ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
        print(f"| {name} | {len(run)} | {show(behavior)} | {show(close)} |")
    differ = []
    codes = []
    for case in ids:
        a, b = direct.get(case), proxy.get(case)
        if a is None or b is None:
            differ.append((case, a and a["behavior"], b and b["behavior"], "missing"))
            continue
        if (a["behavior"], a["behaviorClose"]) != (b["behavior"], b["behaviorClose"]):
            differ.append(
                (
                    case,
                    f'{a["behavior"]}/{a["behaviorClose"]}',
                    f'{b["behavior"]}/{b["behaviorClose"]}',
                    "",
                )
            )
        elif a.get("remoteCloseCode") != b.get("remoteCloseCode"):
            codes.append((case, a.get("remoteCloseCode"), b.get("remoteCloseCode")))
    print()
    if differ:
        print(f"{len(differ)} of {len(ids)} cases got a different verdict:")
        print()
        print("| case | direct | through Switchyard | note |")
        print("|---|---|---|---|")
        for row in differ:
            print("| " + " | ".join(str(x) for x in row) + " |")
    else:
        print(f"All {len(ids)} cases got the same verdict directly and through Switchyard.")
    if codes:
        print()
        print(f"{len(codes)} cases with the same verdict but another close code:")
        print()
        print("| case | direct | through Switchyard |")
        print("|---|---|---|")
        for row in codes:
            print("| " + " | ".join(str(x) for x in row) + " |")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
