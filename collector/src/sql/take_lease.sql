-- Takes the host's lease for agent instance $2 unless another live instance holds it.
-- Boot id does not void a lease: clones of one image differ only there, and must be
-- refused, not merged; after a reboot the old lease simply lapses.
UPDATE hosts
SET live_instance = $2, live_until = now() + $3::interval, boot_id = $4
WHERE host_id = $1
  AND (live_instance IS NULL OR live_instance = $2 OR live_until < now())
RETURNING last_epoch, last_seq
