#!/usr/bin/env python3
"""Shrinks a fuzz corpus to a small set of inputs that keeps its edge coverage.

`cargo fuzz cmin` keeps every input that adds a feature in one pass over the corpus, smallest
first: thousands of files for a corpus grown with value profiles and hit counters. This asks
the fuzz target for each input's edges (libFuzzer's merge control file, hit counters off), then
picks greedily the input that covers the most edges not yet covered, smaller first on ties,
until every edge is covered or MAX_FILES are picked, and deletes the rest.

Usage: python3 fuzz/shrink.py TARGET_BINARY CORPUS_DIR [MAX_FILES]   (default 300)
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path


def edges_per_file(binary, corpus):
    """Runs the target over the corpus; returns {path: set of edges}."""
    with tempfile.TemporaryDirectory() as scratch:
        control = Path(scratch) / "control"
        empty = Path(scratch) / "empty"
        empty.mkdir()
        subprocess.run(
            [binary, "-merge=1", "-use_counters=0", f"-merge_control_file={control}",
             "-timeout=30", "-rss_limit_mb=4096", str(empty), str(corpus)],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lines = control.read_text().splitlines()
    count = int(lines[0])
    files = lines[2:2 + count]
    edges = {}
    for line in lines[2 + count:]:
        parts = line.split()
        if parts and parts[0] == "COV":
            edges[files[int(parts[1])]] = set(parts[2:])
    return edges


def main():
    binary, corpus = sys.argv[1], Path(sys.argv[2])
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else 300
    edges = edges_per_file(binary, corpus)
    covered, kept = set(), []
    remaining = dict(edges)
    while remaining and len(kept) < limit:
        best = max(remaining, key=lambda f: (len(remaining[f] - covered), -os.path.getsize(f)))
        gain = remaining.pop(best) - covered
        if not gain:
            break
        covered |= gain
        kept.append(best)
    total = set().union(*edges.values()) if edges else set()
    keep = {str(Path(f).resolve()) for f in kept}
    for path in corpus.iterdir():
        if str(path.resolve()) not in keep:
            path.unlink()
    print(f"{corpus}: kept {len(kept)} of {len(edges)} inputs, "
          f"{len(covered)} of {len(total)} edges")


if __name__ == "__main__":
    main()
