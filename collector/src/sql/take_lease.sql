-- Takes the host's lease for agent instance $2 unless another live instance holds it.
-- The lease lasts the configured time, or three sampling intervals if longer.
-- Boot id does not void a lease: clones of one image differ only there, and must be
-- refused, not merged; after a reboot the old lease simply lapses.
-- The same instance reconnecting takes the lease at once, for its new stream $5 (its
-- old stream, half-open or not, is refused at its next batch).
UPDATE hosts
SET live_instance = $2, boot_id = $4, live_stream = $5,
    live_until = now() + GREATEST($3::interval, sample_interval_ms * interval '3 milliseconds')
WHERE host_id = $1
  AND (live_instance IS NULL OR live_instance = $2 OR live_until < now())
RETURNING last_epoch, last_seq
