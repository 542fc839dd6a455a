"""redis-py's cluster client pointed at slotproxy: it must see a healthy
one-node cluster that owns every slot, and work for plain commands, hash tags,
multi-key commands and pipelines. Run by tests/fanout.rs with the proxy port.

RESP3 (redis-py 8's default protocol) arrives with HELLO 3 support; until then
the client is created with protocol=2.
"""
import sys

from redis.cluster import RedisCluster

port = int(sys.argv[1])
rc = RedisCluster(host="127.0.0.1", port=port, protocol=2, decode_responses=True)

info = rc.cluster_info()
assert info["cluster_state"] == "ok", info
assert int(info["cluster_slots_assigned"]) == 16384, info
nodes = rc.get_nodes()
assert len(nodes) == 1 and nodes[0].port == port, nodes

assert rc.set("py:a", "1")
assert rc.get("py:a") == "1"
assert rc.set("{user:7}.name", "ann") and rc.set("{user:7}.age", "40")
assert rc.mget("{user:7}.name", "{user:7}.age") == ["ann", "40"]
assert rc.mget_nonatomic("py:a", "{user:7}.name", "missing") == ["1", "ann", None]
assert rc.delete("py:a", "{user:7}.name") == 2
assert rc.keyslot("foo") == 12182

pipe = rc.pipeline()
for i in range(50):
    pipe.set(f"py:p:{i}", i)
for i in range(50):
    pipe.get(f"py:p:{i}")
out = pipe.execute()
assert out[:50] == [True] * 50, out
assert out[50:] == [str(i) for i in range(50)], out
print("redis-py RedisCluster OK")
