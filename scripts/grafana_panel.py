#!/usr/bin/env python3
"""Appends a time-series panel to a Grafana dashboard JSON (keeps ids and layout consistent).

    scripts/grafana_panel.py DASHBOARD "Title" unit 'expr' '{{legend}}' ['expr2' '{{legend2}}' ...]
"""
import json
import sys

path, title, unit, *pairs = sys.argv[1:]
dashboard = json.load(open(path))
panels = dashboard["panels"]
if any(p["title"] == title for p in panels):
    sys.exit(f"a panel titled {title!r} exists already")
last = max(panels, key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
x = 0 if last["gridPos"]["x"] + last["gridPos"]["w"] + 9 > 24 else last["gridPos"]["x"] + last["gridPos"]["w"]
y = last["gridPos"]["y"] + (last["gridPos"]["h"] if x == 0 else 0)
ds = {"type": "prometheus", "uid": "${datasource}"}
targets = [
    {"refId": chr(ord("A") + i), "expr": e, "legendFormat": l, "datasource": ds}
    for i, (e, l) in enumerate(zip(pairs[::2], pairs[1::2]))
]
panels.append({
    "type": "timeseries",
    "title": title,
    "id": max(p["id"] for p in panels) + 1,
    "datasource": ds,
    "gridPos": {"h": 8, "w": 9 if x == 0 else 15, "x": x, "y": y},
    "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
    "options": {},
    "targets": targets,
})
with open(path, "w") as f:
    json.dump(dashboard, f, indent=2)
    f.write("\n")
