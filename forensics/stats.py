"""Statistics the SQL rules call as DuckDB functions (registered on the case connection)."""

from __future__ import annotations

import math

import duckdb


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_greater(fail_a: int, total_a: int, fail_b: int, total_b: int) -> float | None:
    """One-sided Fisher exact test p-value that group A fails more often than group B.

    P(X >= fail_a) for X hypergeometric: population total_a + total_b with fail_a + fail_b
    failures, sample total_a. None for impossible counts.
    """
    if None in (fail_a, total_a, fail_b, total_b):
        return None
    if not (0 <= fail_a <= total_a and 0 <= fail_b <= total_b) or total_a + total_b == 0:
        return None
    n_pop = total_a + total_b
    k_pop = fail_a + fail_b
    denom = _log_comb(n_pop, total_a)
    hi = min(total_a, k_pop)
    p = 0.0
    for x in range(fail_a, hi + 1):
        if total_a - x > n_pop - k_pop:
            continue
        p += math.exp(_log_comb(k_pop, x) + _log_comb(n_pop - k_pop, total_a - x) - denom)
    return min(1.0, p)


def register(con: duckdb.DuckDBPyConnection) -> None:
    """Makes `fisher_greater(fail_a, total_a, fail_b, total_b)` available to SQL."""
    from duckdb.sqltypes import BIGINT, DOUBLE

    have = con.execute(
        "SELECT count(*) FROM duckdb_functions() WHERE function_name = 'fisher_greater'"
    ).fetchall()[0][0]
    if not have:
        con.create_function(
            "fisher_greater",
            fisher_greater,
            [BIGINT, BIGINT, BIGINT, BIGINT],
            DOUBLE,
            null_handling="special",
            side_effects=False,
        )
