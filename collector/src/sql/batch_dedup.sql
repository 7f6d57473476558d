-- A full table sent in chunks lists a socket twice only when its agent is broken or
-- hostile: the last listing stands, as if the chunks had been one message (one
-- statement must not touch a row twice). Run only when such a pair exists.
DELETE FROM batch_sockets a
USING batch_sockets b
WHERE a.netns = b.netns AND a.sock_key = b.sock_key AND a.ord < b.ord
