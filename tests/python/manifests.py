"""Loads Kubernetes manifests (multi-document YAML) and prints them as one JSON list,
so Rust tests can assert on them without a YAML parser of their own.

usage: manifests.py FILE...
"""
import json
import sys

import yaml

docs = []
for path in sys.argv[1:]:
    with open(path) as f:
        docs.extend(d for d in yaml.safe_load_all(f) if d)
json.dump(docs, sys.stdout)
