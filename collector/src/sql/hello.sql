-- Registers (or refreshes) a host by (machine_id, hostname) and returns its id.
INSERT INTO hosts (machine_id, hostname, boot_id, labels, agent_version, ephemeral_low,
    ephemeral_high, fin_timeout_s, sample_interval_ms)
VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9)
ON CONFLICT (machine_id, hostname) DO UPDATE
SET labels = EXCLUDED.labels, agent_version = EXCLUDED.agent_version,
    ephemeral_low = EXCLUDED.ephemeral_low, ephemeral_high = EXCLUDED.ephemeral_high,
    fin_timeout_s = EXCLUDED.fin_timeout_s, sample_interval_ms = EXCLUDED.sample_interval_ms
RETURNING host_id
