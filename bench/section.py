"""Writing one generated section of bench/RESULTS.md, shared by the harnesses' report.py."""
import os
import sys


def write(out, start, end, text, who):
    """Print text (a section from its `start` heading to its `end` marker) when out is empty;
    else put it in place of the file's old generated block, keeping the hand-written notes after
    the marker, or append it when the file has no such section yet."""
    if not out:
        sys.stdout.write(text)
        return
    old = open(out, encoding="utf-8").read() if os.path.exists(out) else "# Benchmark results\n"
    if start in old:
        head, rest = old.split(start, 1)
        if end in rest:
            tail = rest.split(end, 1)[1].lstrip("\n")
        else:
            nxt = rest.find("\n## ")
            tail = rest[nxt + 1:] if nxt >= 0 else ""
        new = head + text + ("\n" + tail if tail else "")
    else:
        new = old.rstrip("\n") + "\n\n" + text
    with open(out, "w", encoding="utf-8") as f:
        f.write(new)
    print(f"{who}: wrote the \"{start.lstrip('# ')}\" section of {out}", file=sys.stderr)
