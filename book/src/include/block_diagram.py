# Block diagrams drawn with matplotlib patches (the same helper in every chapter; its
# source is book/src/include/block_diagram.py). A diagram is a dict of nodes and a list
# of edges:
#   nodes: {name: (x, y, label, kind)} or (x, y, label, kind, width); (x, y) the centre.
#   kinds: "tensor" (a feature map), "pool" (pooling, a reduction), "layer" (learned:
#          conv, FC), "gate" (sigmoid, softmax), "plain" (reshape, split, ...), "mul"
#          and "add" (circles).
#   edges: (a, b), (a, b, label) or (a, b, label, [(x, y), ...]): an arrow from node a
#          to node b, through the listed corner points (a skip path, the input
#          re-entering at a product).
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Patch

DIAGRAM_KINDS = {
    "tensor": ("#f3f3f3", "#404040", "feature map"),
    "pool": ("#d9ead3", "#38761d", "pooling"),
    "layer": ("#cfe2f3", "#1c4587", "learned layer"),
    "gate": ("#fce5cd", "#b45f06", "gate (sigmoid, softmax)"),
    "plain": ("#ffffff", "#7f7f7f", "reshape, split, fixed op"),
    "mul": ("#ffffff", "#000000", None),
    "add": ("#ffffff", "#000000", None),
}
_BOX_H, _BOX_W, _RADIUS = 0.78, 1.7, 0.26


def _node_geometry(spec):
    x, y, label, kind = spec[:4]
    width = spec[4] if len(spec) > 4 else _BOX_W
    if kind not in DIAGRAM_KINDS:
        raise ValueError(f"block_diagram: node kind must be one of "
                         f"{sorted(DIAGRAM_KINDS)}, got {kind!r}")
    return x, y, label, kind, width


def _boundary(spec, toward):
    """Where the segment from the node's centre toward `toward` leaves the node."""
    x, y, _, kind, width = _node_geometry(spec)
    dx, dy = toward[0] - x, toward[1] - y
    if dx == 0 and dy == 0:
        return x, y
    if kind in ("mul", "add"):
        norm = (dx * dx + dy * dy) ** 0.5
        return x + _RADIUS * dx / norm, y + _RADIUS * dy / norm
    scale = min(
        (width / 2) / abs(dx) if dx else float("inf"),
        (_BOX_H / 2) / abs(dy) if dy else float("inf"),
    )
    return x + dx * scale, y + dy * scale


def block_diagram(nodes, edges, *, scale=0.62, fontsize=10, legend=True):
    """Draw the nodes and arrows; return the figure. One data unit is `scale` inches;
    the figure may be at most 6.6 inches wide, the book's column at 100 dpi."""
    import matplotlib.pyplot as plt

    geometry = {name: _node_geometry(spec) for name, spec in nodes.items()}
    xs = [g[0] - g[4] / 2 for g in geometry.values()]
    xs += [g[0] + g[4] / 2 for g in geometry.values()]
    ys = [g[1] for g in geometry.values()]
    for edge in edges:
        for point in (edge[3] if len(edge) > 3 else []):
            xs.append(point[0])
            ys.append(point[1])
    x0, x1 = min(xs) - 0.3, max(xs) + 0.3
    y0, y1 = min(ys) - 0.65, max(ys) + 0.65
    kinds_used = [k for k in DIAGRAM_KINDS if any(g[3] == k for g in geometry.values())]
    named = [k for k in kinds_used if DIAGRAM_KINDS[k][2]] if legend else []
    ncol = len(named) if len(named) <= 4 else (len(named) + 1) // 2  # one or two rows
    legend_rows = 0.0 if not named else (0.55 if ncol == len(named) else 0.95)
    if (x1 - x0) * scale > 6.6:
        raise ValueError(f"block_diagram: {x1 - x0:.1f} units x {scale} in is wider "
                         "than the column (6.6 in): move nodes closer or lower the "
                         "scale")
    fig = plt.figure(figsize=((x1 - x0) * scale, (y1 - y0 + legend_rows) * scale))
    ax = fig.add_axes((0, 0, 1, 1))  # the whole figure: one data unit is `scale` inches
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0 - legend_rows, y1)
    ax.set_aspect("equal")
    ax.axis("off")
    for name, (x, y, label, kind, width) in geometry.items():
        face, edge_colour, _ = DIAGRAM_KINDS[kind]
        if kind in ("mul", "add"):
            ax.add_patch(Circle((x, y), _RADIUS, fc=face, ec=edge_colour, lw=1.4,
                                zorder=3))
            ax.text(x, y, "×" if kind == "mul" else "+", ha="center", va="center",
                    fontsize=fontsize + 3, zorder=4)
            if label:
                ax.text(x, y - _RADIUS - 0.08, label, ha="center", va="top",
                        fontsize=fontsize - 1, zorder=4)
            continue
        ax.add_patch(FancyBboxPatch((x - width / 2, y - _BOX_H / 2), width, _BOX_H,
                                    boxstyle="round,pad=0,rounding_size=0.12",
                                    fc=face, ec=edge_colour, lw=1.3, zorder=2))
        ax.text(x, y, label, ha="center", va="center", fontsize=fontsize, zorder=4)
    for edge in edges:
        a, b = edge[0], edge[1]
        label = edge[2] if len(edge) > 2 else None
        via = list(edge[3]) if len(edge) > 3 else []
        for end in (a, b):
            if end not in nodes:
                raise ValueError(f"block_diagram: edge {a!r} -> {b!r} names no node "
                                 f"{end!r}")
        points = [geometry[a][:2]] + via + [geometry[b][:2]]
        points[0] = _boundary(nodes[a], points[1])
        points[-1] = _boundary(nodes[b], points[-2])
        for p, q in zip(points[:-2], points[1:-1]):
            ax.plot([p[0], q[0]], [p[1], q[1]], color="#303030", lw=1.2, zorder=1)
        ax.add_patch(FancyArrowPatch(points[-2], points[-1], arrowstyle="-|>",
                                     mutation_scale=13, color="#303030", lw=1.2,
                                     zorder=1, shrinkA=0, shrinkB=0))
        if label:
            (px, py), (qx, qy) = max(zip(points[:-1], points[1:]),
                                     key=lambda pq: abs(pq[1][0] - pq[0][0])
                                     + abs(pq[1][1] - pq[0][1]))
            mx, my = (px + qx) / 2, (py + qy) / 2
            ax.text(mx, my, label, ha="center", va="center", fontsize=fontsize - 1,
                    color="#303030", zorder=5,
                    bbox=dict(boxstyle="round,pad=0.12", fc="white", ec="none"))
    if legend_rows:
        handles = [Patch(fc=DIAGRAM_KINDS[k][0], ec=DIAGRAM_KINDS[k][1],
                         label=DIAGRAM_KINDS[k][2]) for k in named]
        ax.legend(handles=handles, loc="lower center", ncol=ncol, frameon=False,
                  fontsize=fontsize - 1, bbox_to_anchor=(0.5, 0.0), handlelength=1.2,
                  columnspacing=1.0)
    return fig
