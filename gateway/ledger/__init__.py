"""The state dir's database and what lives in it.

    schema     the SQLite file (0600, WAL), its versioned schema migrations
    db         the writer thread (batched, retried) and the reader thread
    usage      ledger rows: ``LedgerWriter.add``, totals, CSV export, spend, recent rows
    responses  the Responses API store (``store`` / ``previous_response_id`` / input items)
    breaker    the breaker snapshot table
    cost       pure: tokens times the serving provider's price
    budget     pure: daily / monthly budget checks and the 80 % warning
    period     pure: local days and months, ``--since`` values
    config     the ``gateway.usage`` / ``gateway.budget`` / ``gateway.responses`` sections

This module imports nothing, so ``gateway.config`` may import ``gateway.ledger.config``.
"""
