"""Min-cost assignment (rows to distinct columns) in plain Python.

Used to align a json user's baskets to a customer's days (``models.tafeng_matching``);
the matrices there are at most ~50 x 90, so this is fast enough and keeps scipy out of
the dependencies.
"""

from __future__ import annotations

INFEASIBLE = 1e9  # a cost that marks a forbidden cell


def min_cost_assignment(cost: list[list[float]]) -> list[int] | None:
    """Column per row, distinct, of minimal total cost; None if rows > columns or any
    chosen cell is ``INFEASIBLE``.

    Shortest augmenting path (Jonker-Volgenant style), O(n^2 m).
    """
    n, m = len(cost), len(cost[0]) if cost else 0
    if n == 0:
        return []
    if n > m:
        return None
    inf = float("inf")
    u = [0.0] * (n + 1)
    v = [0.0] * (m + 1)
    p = [0] * (m + 1)  # p[j] = row (1-based) assigned to column j
    way = [0] * (m + 1)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = [inf] * (m + 1)
        used = [False] * (m + 1)
        while True:
            used[j0] = True
            i0 = p[j0]
            delta = inf
            j1 = 0
            row = cost[i0 - 1]
            for j in range(1, m + 1):
                if not used[j]:
                    cur = row[j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j] = cur
                        way[j] = j0
                    if minv[j] < delta:
                        delta = minv[j]
                        j1 = j
            for j in range(m + 1):
                if used[j]:
                    u[p[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while True:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
            if j0 == 0:
                break
    result = [0] * n
    for j in range(1, m + 1):
        if p[j]:
            result[p[j] - 1] = j - 1
    if any(cost[i][result[i]] >= INFEASIBLE for i in range(n)):
        return None
    return result
