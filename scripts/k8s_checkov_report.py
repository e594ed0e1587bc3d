#!/usr/bin/env python3
"""What scripts/k8s-validate.sh makes of checkov's JSON report (`checkov -o json`, the
kubernetes framework, over the rendered kustomizations and the raw *.example.yaml files):
the counts per source, each skip with its reason, and every failure. It fails when a check
failed, a file did not parse, a source got no check at all (checkov read nothing of it), or
a skip annotation gives no reason. Standard library only, so any python3 runs it.

Arguments: the JSON report, then pairs of a scanned file and the label to show for it."""
import json
import os
import sys
from collections import Counter

report_path = sys.argv[1]
labels = {os.path.abspath(f): label for f, label in zip(sys.argv[2::2], sys.argv[3::2])}

with open(report_path) as f:
    report = json.load(f)
# One framework gives one report; a list would mean checkov ran more than we asked for.
if isinstance(report, list):
    report = next((r for r in report if r.get("check_type") == "kubernetes"), {})
results = report.get("results") or {}
summary = report.get("summary") or {}
errors = []


def source(check):
    return labels.get(check.get("file_abs_path"), check.get("file_path"))


counts = {label: Counter() for label in labels.values()}
for kind in ("passed", "failed", "skipped"):
    for check in results.get(kind + "_checks", []):
        counts.setdefault(source(check), Counter())[kind] += 1

for label, count in counts.items():
    print("  %-46s passed %3d, failed %d, skipped %d" %
          (label, count["passed"], count["failed"], count["skipped"]))
    if not count["passed"] + count["failed"] + count["skipped"]:
        errors.append("%s: checkov ran no check on it (not read as Kubernetes?)" % label)

skips = Counter()
for check in results.get("skipped_checks", []):
    reason = (check.get("check_result") or {}).get("suppress_comment") or ""
    skips[(check["check_id"], check["resource"].split(".")[0], reason)] += 1
    if not reason.strip() or reason == "No comment provided":
        errors.append("%s %s: skips %s without a reason (checkov.io/skipN: ID=reason)" %
                      (source(check), check["resource"], check["check_id"]))
if skips:
    print("skipped on purpose (annotations checkov.io/skipN in the manifests):")
    for (check_id, kind, reason), n in sorted(skips.items()):
        print("  %-11s %-12s x%d  %s" % (check_id, kind, n, reason))

for check in results.get("failed_checks", []):
    errors.append("%s %s: FAILED %s %s" % (source(check), check["resource"],
                                           check["check_id"], check.get("check_name")))
for path in results.get("parsing_errors", []):
    errors.append("%s: checkov could not parse it" % labels.get(path, path))

print("checkov %s: %d passed, %d failed, %d skipped, %d resources" % (
    summary.get("checkov_version", "?"), summary.get("passed", 0), summary.get("failed", 0),
    summary.get("skipped", 0), summary.get("resource_count", 0)))
if not summary.get("passed"):
    errors.append("checkov passed no check at all: it scanned nothing")
if errors:
    print("\n%d CHECKOV ERRORS:" % len(errors))
    for e in errors:
        print("  " + e)
    sys.exit(1)
