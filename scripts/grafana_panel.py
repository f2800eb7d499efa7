#!/usr/bin/env python3
"""Appends a time-series panel to one of the Grafana dashboards in grafana/dashboards/ (keeps ids and
layout consistent).

    scripts/grafana_panel.py DASHBOARD "Title" unit 'expr' '{{legend}}' ['expr2' '{{legend2}}' ...]

DASHBOARD is a dashboard's name (overview, media, control, delivery: grafana/dashboards/NAME.json)
or the path of a dashboard file. Every expr filters by the dashboard's node variable, as
`instance=~"$node"` (and device-labelled metrics on the media dashboard by `device=~"$device"`).
"""
import json
import os
import sys

DASHBOARDS = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "grafana", "dashboards"))

if len(sys.argv) < 6 or len(sys.argv) % 2:
    sys.exit(__doc__)
name, title, unit, *pairs = sys.argv[1:]
path = name if name.endswith(".json") else os.path.join(DASHBOARDS, f"{name}.json")
if not os.path.isfile(path):
    known = sorted(f[:-5] for f in os.listdir(DASHBOARDS) if f.endswith(".json"))
    sys.exit(f"no dashboard {path!r} (known: {', '.join(known)})")
for expr in pairs[::2]:
    if 'instance=~"$node"' not in expr:
        sys.exit(f'{expr!r} does not filter by the node variable (instance=~"$node")')
dashboard = json.load(open(path))
panels = dashboard["panels"]
if any(p["title"] == title for p in panels):
    sys.exit(f"a panel titled {title!r} exists already")
# Next free half-row: right of the last panel if it leaves room, else below it.
last = max(panels, key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
x = 0 if last["gridPos"]["x"] + last["gridPos"]["w"] + 12 > 24 else last["gridPos"]["x"] + last["gridPos"]["w"]
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
    "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
    "fieldConfig": {"defaults": {"unit": unit, "min": 0}, "overrides": []},
    "options": {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    },
    "targets": targets,
})
with open(path, "w") as f:
    json.dump(dashboard, f, indent=2, ensure_ascii=False)
    f.write("\n")
print(f"added panel {title!r} to {os.path.relpath(path)}")
