"""Parses an OpenMetrics 1.0 text from stdin with the official Python client's strict
parser (promtool of Debian 12 reads only the 0.0.4 format). Prints each family's
name, type and sample names as JSON; exits non-zero on the first violation."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main():
    families = {}
    for family in text_string_to_metric_families(sys.stdin.read()):
        families[family.name] = {
            "type": family.type,
            "samples": sorted({s.name for s in family.samples}),
        }
    json.dump(families, sys.stdout)


if __name__ == "__main__":
    main()
