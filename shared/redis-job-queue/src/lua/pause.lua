-- Pause a queue's shard: set its paused mark to the server's time (epoch
-- ms) unless it is set already, and answer the mark.
-- KEYS: 1 the paused mark
redis.call('SET', KEYS[1], now, 'NX')
return tonumber(redis.call('GET', KEYS[1]))
