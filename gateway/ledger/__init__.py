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

How a gateway process uses it (one ``Database`` per process, owned by the app)::

    db = Database(db_path(settings.paths))
    ledger = LedgerWriter(db, tz=zone, retention_days=usage.retention_days)
    responses = ResponseStore(db, retention_hours=responses_cfg.retention_hours)
    await db.start()                      # DatabaseError: the file cannot be used at all
    await ledger.load_spend(time.time())  # seeds today's / this month's spend
    ...
    ledger.check_budget(budgets, now)     # at admission: Refusal | None, no I/O
    ledger.add(UsageRow(...))             # once per finished request, never blocks
    await responses.history(previous_id)  # one read on the reader thread
    ...
    await ledger.drain(); await db.stop()

This module imports nothing, so ``gateway.config`` may import ``gateway.ledger.config``.
"""
