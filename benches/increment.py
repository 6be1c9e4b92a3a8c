#!/usr/bin/env python3
"""Make a daily increment from two generated samples.

    python3 benches/increment.py --base S1 --bigger S2 --out DELTA [--changed N]

`custlake generate` with the same seed and as-of date and more customers
gives a superset of the smaller sample. This writes, for every extract, only
the rows of BIGGER that BASE does not have (new customers and their
records), as a source system would deliver its daily changes. With
--changed N, N existing telesales leads also come again with a new phone
number (changed records whose blocking keys move).

Needs pyarrow for the Parquet extracts.
"""

import argparse
import os
import sys


def lines(path):
    with open(path, "rb") as f:
        return f.read().splitlines(keepends=True)


def text_delta(base, bigger, out, header):
    old = set(lines(base)) if os.path.exists(base) else set()
    rows = lines(bigger)
    head, body = (rows[:1], rows[1:]) if header else ([], rows)
    new = [r for r in body if r not in old]
    with open(out, "wb") as f:
        f.writelines(head + new)
    return len(new)


def parquet_delta(base, bigger, out):
    import pyarrow.parquet as pq

    big = pq.read_table(bigger)
    old = set()
    if os.path.exists(base):
        t = pq.read_table(base)
        old = set(zip(*[c.to_pylist() for c in t.columns]))
    keep = [tuple(r) not in old for r in zip(*[c.to_pylist() for c in big.columns])]
    import pyarrow as pa

    delta = big.filter(pa.array(keep))
    pq.write_table(delta, out)
    return delta.num_rows


def change_phones(base, out, n):
    """Append n existing leads with a new phone to the leads delta."""
    rows = lines(base)
    header = rows[0].decode("utf-8").rstrip("\r\n").split(",")
    tel = header.index("tel")
    changed = []
    for r in rows[1 : 1 + n * 7 : 7]:
        cells = r.decode("utf-8").rstrip("\r\n").split(",")
        if len(cells) != len(header) or not cells[tel]:
            continue
        digits = cells[tel]
        last = digits[-1]
        cells[tel] = digits[:-1] + ("0" if last != "0" else "1")
        changed.append((",".join(cells) + "\n").encode("utf-8"))
    with open(out, "ab") as f:
        f.writelines(changed)
    return len(changed)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--bigger", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--changed", type=int, default=0)
    a = ap.parse_args()
    total = 0
    for system in sorted(os.listdir(a.bigger)):
        src = os.path.join(a.bigger, system)
        if not os.path.isdir(src):
            continue
        os.makedirs(os.path.join(a.out, system), exist_ok=True)
        for name in sorted(os.listdir(src)):
            b, o = os.path.join(a.base, system, name), os.path.join(a.out, system, name)
            path = os.path.join(src, name)
            if name.endswith(".csv"):
                n = text_delta(b, path, o, header=True)
            elif name.endswith(".jsonl"):
                n = text_delta(b, path, o, header=False)
            elif name.endswith(".parquet"):
                n = parquet_delta(b, path, o)
            else:
                continue
            if a.changed and system == "telesales" and name == "leads.csv":
                n += change_phones(b, o, a.changed)
            print(f"{system}/{name}: {n} rows", file=sys.stderr)
            total += n
    print(f"{total} rows in the increment", file=sys.stderr)


if __name__ == "__main__":
    main()
