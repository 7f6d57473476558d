-- The SQL functions the pushed-down queries call on the workers (finwait_scope_local,
-- finwait_endpoint_key, finwait_pair_key, finwait_reporting): functions created before
-- the citus extension exist only on the coordinator, so each one not yet known to Citus
-- is distributed (created on every worker). Idempotent.
SELECT create_distributed_function(p.oid::regprocedure::text)
FROM pg_proc p
WHERE p.proname LIKE 'finwait\_%'
  AND p.pronamespace = 'public'::regnamespace
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_object o
                  WHERE o.classid = 'pg_proc'::regclass AND o.objid = p.oid)
