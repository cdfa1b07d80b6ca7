#!/usr/bin/env python3
"""Writes the 1 MiB bodies of bench/run.sh's upload and download scenarios.

Usage: gen_bodies.py OUTDIR

- OUTDIR/bulk.json: a `POST .../TextClassification:bulk` body (Argilla 1.5's
  TextClassificationBulkRequest: tags, metadata and a list of records with text inputs and an
  annotation), exactly 1 MiB.
- OUTDIR/search-query.json: a `POST .../TextClassification:search` body (a query and a sort).
- OUTDIR/static/search-page.json: the answer to that search (total, records, aggregations),
  exactly 1 MiB; the upstream nginx serves it as a file.
"""

import json
import sys
from pathlib import Path

MIB = 1 << 20
WORDS = (
    "the annotation team labels each record of the dataset so that the model learns which "
    "texts are positive and which are negative while the gateway checks every request"
).split()


def text(i: int, n_words: int) -> str:
    return " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(n_words))


def record(i: int, scored: bool) -> dict:
    r = {
        "id": f"5f3c1e2a-{i:04x}-4000-8000-{i:012x}",
        "inputs": {"text": text(i, 120)},
        "metadata": {"source": "bench", "batch": i // 100},
        "annotation": {"agent": "team-a", "labels": [{"class": "POSITIVE" if i % 2 else "NEGATIVE", "score": 1.0}]},
        "status": "Validated",
        "event_timestamp": "2023-01-01T00:00:00",
    }
    if scored:
        r["prediction"] = {"agent": "model-1", "labels": [{"class": "POSITIVE", "score": 0.5 + (i % 50) / 100}]}
        r["last_updated"] = "2023-01-01T00:00:00"
        r["search_keywords"] = ["annotation", "dataset"]
    return r


def exactly_mib(make) -> bytes:
    """Adds records while the document stays under 1 MiB, then pads the last record's text."""

    def dump(doc) -> bytes:
        return json.dumps(doc, separators=(",", ":")).encode()

    size = len(dump(make([])))  # the envelope; each record adds its own length and a comma
    records = []
    while True:
        r = record(len(records), make is page)
        grow = len(dump(r)) + (1 if records else 0)
        if size + grow > MIB:
            break
        records.append(r)
        size += grow
    records[-1]["inputs"]["text"] += "x" * (MIB - size)
    body = dump(make(records))
    assert len(body) == MIB, len(body)
    return body


def bulk(records: list) -> dict:
    return {"tags": {"env": "bench"}, "metadata": {}, "records": records}


def page(records: list) -> dict:
    return {
        "total": 100000,
        "records": records,
        "aggregations": {"predicted_as": {"POSITIVE": 50000, "NEGATIVE": 50000}, "status": {"Validated": 100000}},
    }


def main() -> None:
    out = Path(sys.argv[1])
    (out / "static").mkdir(parents=True, exist_ok=True)
    (out / "bulk.json").write_bytes(exactly_mib(bulk))
    (out / "static" / "search-page.json").write_bytes(exactly_mib(page))
    query = {"query": {"query_text": "annotation", "status": ["Validated"]}, "sort": [{"id": "id", "order": "asc"}]}
    (out / "search-query.json").write_text(json.dumps(query, separators=(",", ":")))


if __name__ == "__main__":
    main()
