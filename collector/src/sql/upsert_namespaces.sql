-- Records a batch's namespaces: $1 host, then parallel arrays of netns, is_host,
-- cgroup, service, container. Unchanged rows are not rewritten.
INSERT INTO namespaces (host_id, netns, is_host, cgroup, service, container)
SELECT DISTINCT ON (n.netns) $1, n.netns, n.is_host, n.cgroup, n.service, n.container
FROM UNNEST($2::bigint[], $3::boolean[], $4::text[], $5::text[], $6::text[])
     AS n (netns, is_host, cgroup, service, container)
ORDER BY n.netns
ON CONFLICT (host_id, netns) DO UPDATE
SET is_host = EXCLUDED.is_host, cgroup = EXCLUDED.cgroup, service = EXCLUDED.service,
    container = EXCLUDED.container
WHERE (namespaces.is_host, namespaces.cgroup, namespaces.service, namespaces.container)
      IS DISTINCT FROM (EXCLUDED.is_host, EXCLUDED.cgroup, EXCLUDED.service, EXCLUDED.container)
