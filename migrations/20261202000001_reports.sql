-- Trend reports and their deliveries.
--
-- One row per schedule and window end: the unique key is what makes several
-- collectors on one database produce each scheduled report once (the builder also
-- holds a transaction-scoped advisory lock while it builds, so the others do not
-- build it in vain). The document is the report's JSON, the source of every
-- rendering. Rows older than the report retention are deleted by maintenance.
CREATE TABLE reports (
    report_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    schedule     text NOT NULL,
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    generated_at timestamptz NOT NULL DEFAULT now(),
    baseline     boolean NOT NULL,
    changed      boolean NOT NULL,
    document     jsonb NOT NULL,
    UNIQUE (schedule, window_end)
);
CREATE INDEX reports_generated ON reports (generated_at DESC);

-- Delivery of a report to one destination. state: pending (next_attempt_at says
-- when), delivered (acknowledged by the destination: never sent again), failed
-- (given up after the attempt limit), skipped (only_changed and nothing changed).
-- The destination is stored whole, so a restart delivers where the report was meant
-- to go even if the configuration changed meanwhile.
CREATE TABLE report_deliveries (
    report_id       bigint NOT NULL REFERENCES reports (report_id) ON DELETE CASCADE,
    label           text NOT NULL,
    destination     jsonb NOT NULL,
    state           text NOT NULL CHECK (state IN ('pending', 'delivered', 'failed', 'skipped')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    delivered_at    timestamptz,
    PRIMARY KEY (report_id, label)
);
CREATE INDEX report_deliveries_due ON report_deliveries (next_attempt_at) WHERE state = 'pending';
