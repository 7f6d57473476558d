-- The peer's fixed cost: starting psql and connecting, for a query that does nothing.
SELECT 1;
