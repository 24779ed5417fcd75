"""Seed best practice 1 in words a sidebar can show: distributed's version table as one line per package."""
from __future__ import annotations

PREFIX = "Version mismatch between this server and the cluster"


def readable_mismatch(table_text: str) -> str:
    """``distributed.versions.error_message()``'s warning (a title and an ASCII table) as sentences:
    "dask: 2026.8.0 on the Jupyter server, 2026.8.0 on the scheduler, 0.0.1 on the workers".
    Text that holds no table is returned as it is, after the prefix."""
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in table_text.splitlines()
        if line.strip().startswith("|")
    ]
    if len(rows) < 2:
        return f"{PREFIX}: {table_text.strip()}"
    header, body = rows[0], rows[1:]
    lines = []
    for row in body:
        if len(row) != len(header):
            continue
        package, *versions = row
        where = [f"{v or 'missing'} on the {h.lower() if h in ('Scheduler', 'Workers') else h}" for h, v in zip(header[1:], versions)]
        lines.append(f"{package}: {', '.join(where)}")
    return f"{PREFIX}: " + "; ".join(lines)
